#!/usr/bin/env python3

r"""
The reproduction's small text classifiers and their training: a word CNN and a
2-layer BERT on a whitespace word vocabulary with [CLS]/[SEP], the one-at-a-time
and side-by-side (vmap ensemble) trainers, and the test-sentence draw.
"""

import os
from collections import Counter
from typing import List, Sequence, Tuple

import torch
from torch import nn

from benchmarks._ensemble import train_ensemble

PAD, UNK, CLS, SEP = 0, 1, 2, 3


class WordTransformer(nn.Module):
    r"""
    A 2-layer BERT (hidden 64) built from a config, on the same word vocabulary.
    No dropout (so that a retrain is a function of its data and seed alone), eager
    attention and an additive mask (so that it runs under ``torch.func.vmap``).
    """

    final_layer = "hf.classifier"
    epochs, lr, checkpoint_every = 6, 1e-3, 2

    def __init__(self, vocab: int) -> None:
        super().__init__()
        from transformers import BertConfig, BertForSequenceClassification

        config = BertConfig(
            vocab_size=vocab,
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=128,
            max_position_embeddings=64,
            num_labels=2,
            pad_token_id=PAD,
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
        )
        config._attn_implementation = "eager"
        self.hf = BertForSequenceClassification(config)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        blocked = torch.finfo(torch.float32).min
        mask = torch.zeros(ids.shape, device=ids.device).masked_fill(
            ids == PAD, blocked
        )
        return self.hf(input_ids=ids, attention_mask=mask[:, None, None, :]).logits


class WordCNN(nn.Module):
    final_layer = "fc"
    epochs, lr, checkpoint_every = 3, 2e-3, 1

    def __init__(self, vocab: int, dim: int = 64, filters: int = 64) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab, dim, padding_idx=PAD)
        self.conv = nn.Conv1d(dim, filters, kernel_size=3, padding=1)
        self.fc = nn.Linear(filters, 2)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        real = (ids != PAD).unsqueeze(-1)
        hidden = torch.relu(self.conv((self.embedding(ids) * real).transpose(1, 2)))
        hidden = hidden.masked_fill(~real.transpose(1, 2), 0.0)
        return self.fc(hidden.max(dim=2).values)


def encode(texts: Sequence[str], vocab: dict, length: int = 64) -> torch.Tensor:
    ids = torch.full((len(texts), length), PAD, dtype=torch.long)
    for i, text in enumerate(texts):
        tokens = [CLS] + [vocab.get(w, UNK) for w in text.split()][: length - 2] + [SEP]
        ids[i, : len(tokens)] = torch.tensor(tokens)
    return ids


class Trainer:
    r"""
    ``train_fn(indices, seed)`` and ``train_many_fn(index_lists, seeds)`` for
    the harness, and checkpointed training. The recipe (epochs, learning rate,
    checkpoint spacing) is the architecture's.
    """

    def __init__(
        self, ids, labels, vocab_size, batch=32, architecture=None, device="cpu"
    ):
        self.architecture = architecture or WordCNN
        self.ids, self.labels = ids, labels
        self.vocab_size, self.batch, self.device = vocab_size, batch, device
        self.epochs, self.lr = self.architecture.epochs, self.architecture.lr

    def __call__(self, indices: Sequence[int], seed: int, save_to: str = None):
        torch.manual_seed(seed)
        model = self.architecture(self.vocab_size)
        optimizer = torch.optim.Adam(model.parameters(), lr=self.lr)
        indices = torch.as_tensor(list(indices))
        generator = torch.Generator().manual_seed(seed)
        paths = []
        model.train()
        for epoch in range(self.epochs):
            order = indices[torch.randperm(len(indices), generator=generator)]
            for start in range(0, len(order), self.batch):
                rows = order[start : start + self.batch]
                ids = self.ids[rows]
                width = int((ids != PAD).sum(1).max())
                loss = nn.functional.cross_entropy(
                    model(ids[:, :width]), self.labels[rows]
                )
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            if save_to is not None and (epoch + 1) % model.checkpoint_every == 0:
                paths.append(os.path.join(save_to, f"checkpoint-{epoch}.pt"))
                state = {
                    "model_state_dict": model.state_dict(),
                    "learning_rate": self.lr,
                }
                torch.save(state, paths[-1])
        model.eval()
        return (model, paths) if save_to is not None else model

    def train_many(self, index_lists: Sequence[Sequence[int]], seeds: Sequence[int]):
        return train_ensemble(
            lambda: self.architecture(self.vocab_size),
            self.ids,
            self.labels,
            index_lists,
            seeds,
            self.epochs,
            self.lr,
            self.batch,
            pad_id=PAD,
            device=self.device,
        )


def ground_truth_probability(test_batch):
    r"""``probability_fn`` for the harness: p(ground-truth class) per test text."""

    @torch.no_grad()
    def probability_fn(model):
        probs = model(test_batch[0]).softmax(-1)
        return probs.gather(1, test_batch[1][:, None]).squeeze(1)

    return probability_fn


def word_level_rotten_tomatoes(n_train: int):
    r"""
    Rotten Tomatoes for the reproduction: ``n_train`` training sentences
    (shuffle seed 0) and 1,000 held-out ones, a whitespace word vocabulary over
    the training sentences (ids from 4, after PAD/UNK/CLS/SEP), and the
    training ids and labels.

    Returns:
        (train, held_out, vocab, ids, labels)
    """
    from captum_tracin_we.datasets import load_rotten_tomatoes

    train, held_out = load_rotten_tomatoes(n_train, 1000, seed=0)
    counts = Counter(w for text, _ in train for w in text.split())
    vocab = {w: i + 4 for i, w in enumerate(sorted(counts))}
    ids = encode([t for t, _ in train], vocab)
    labels = torch.tensor([y for _, y in train])
    return train, held_out, vocab, ids, labels


def balanced_test(test: List[Tuple[str, int]], n: int, seed: int) -> List[int]:
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for label in (0, 1):
        pool = [i for i, (_, y) in enumerate(test) if y == label]
        order = torch.randperm(len(pool), generator=generator)[: n // 2]
        chosen += [pool[int(j)] for j in order]
    return chosen


def load_ckpt(model, path):
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(checkpoint["model_state_dict"])
    return float(checkpoint["learning_rate"])
