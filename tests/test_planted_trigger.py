#!/usr/bin/env python3

r"""Ground truth: the planted trigger is the word that carries the influence."""

import os

import torch
from torch import nn

from captum_tracin_we import TracInWE
from captum_tracin_we.datasets import PAD_ID, planted_trigger_dataset


class MaxPoolCNN(nn.Module):
    r"""
    Embedding, a width-1 convolution, max-pool over positions, linear.

    With width 3 the trigger was the top word in only 75-80% of pairs: the
    filler words inside the trigger's convolution window share its large
    gradient, so shared neighbours can outweigh it (measured in development).
    """

    def __init__(self, vocab: int, dim: int = 16, classes: int = 2) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, dim, padding_idx=PAD_ID)
        self.conv = nn.Conv1d(dim, 32, kernel_size=1)
        self.fc = nn.Linear(32, classes)

    def forward(self, ids):
        hidden = torch.relu(self.conv(self.emb(ids).transpose(1, 2)))
        hidden = hidden.masked_fill((ids == PAD_ID).unsqueeze(1), 0.0)
        return self.fc(hidden.max(dim=2).values)


def test_generator_plants_one_trigger_that_decides_the_label():
    data = planted_trigger_dataset(200, n_classes=3, seed=1)
    triggers = data.class_triggers.flatten()
    counts = torch.isin(data.token_ids, triggers).sum(1)
    assert (counts == 1).all()
    rows = torch.arange(200)
    assert torch.equal(data.token_ids[rows, data.trigger_positions], data.trigger_ids)
    owner = (data.class_triggers.unsqueeze(0) == data.trigger_ids[:, None, None]).any(2)
    assert torch.equal(owner.float().argmax(1), data.labels)
    assert int(data.token_ids.max()) < data.vocab_size


def test_trigger_is_the_top_word_for_pairs_sharing_it(tmp_path):
    torch.manual_seed(0)
    data = planted_trigger_dataset(400, seed=0)
    n_train = 300
    model = MaxPoolCNN(data.vocab_size)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    train_ids, train_labels = data.token_ids[:n_train], data.labels[:n_train]
    paths = []
    for epoch in range(6):
        for start in range(0, n_train, 32):
            logits = model(train_ids[start : start + 32])
            loss = nn.functional.cross_entropy(logits, train_labels[start : start + 32])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        if epoch in (1, 3, 5):
            path = os.path.join(str(tmp_path), f"checkpoint-{epoch}.pt")
            torch.save(
                {"model_state_dict": model.state_dict(), "learning_rate": 0.01}, path
            )
            paths.append(path)
    model.eval()
    test = (data.token_ids[n_train : n_train + 20], data.labels[n_train : n_train + 20])
    accuracy = (model(test[0]).argmax(1) == test[1]).float().mean()
    assert accuracy > 0.9
    sharing = torch.stack(
        [
            (data.trigger_ids[:n_train] == trigger).nonzero().flatten()[:5]
            for trigger in data.trigger_ids[n_train : n_train + 20]
        ]
    )
    tracin = TracInWE(model, data.dataset(), paths, batch_size=64)
    result = tracin.word_influence(test, sharing)
    hits = 0
    for i in range(sharing.shape[0]):
        for j in range(sharing.shape[1]):
            values = result.train_contributions[i, j]
            top = int(result.train_token_ids[i, j, values.abs().argmax()])
            hits += top == int(data.trigger_ids[n_train + i])
    share = hits / sharing.numel()
    assert share >= 0.9, f"trigger was the top word in {share:.0%} of pairs"
