#!/usr/bin/env python3

r"""Small models, data and independent references for the tests."""

import os
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from captum.influence import TracInCP
from torch import Tensor, nn
from torch.utils.data import Dataset, TensorDataset

PAD, CLS, SEP = 0, 1, 2
VOCAB = 60


class BagNet(nn.Module):
    r"""A non-HF text classifier: masked mean of tanh(W e) over non-pad tokens."""

    def __init__(self, vocab: int = VOCAB, dim: int = 8, classes: int = 3) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, dim, padding_idx=PAD)
        self.hidden = nn.Linear(dim, dim)
        self.fc = nn.Linear(dim, classes)

    def forward(self, ids: Tensor) -> Tensor:
        return self.from_embeddings(self.emb(ids), ids)

    def from_embeddings(self, embedded: Tensor, ids: Tensor) -> Tensor:
        mask = (ids != PAD).float().unsqueeze(-1)
        hidden = torch.tanh(self.hidden(embedded)) * mask
        return self.fc(hidden.sum(1) / mask.sum(1).clamp(min=1))


def random_ids(n: int, length: int, seed: int, vocab: int = VOCAB) -> Tensor:
    r"""Token ids in [3, vocab) framed by CLS ... SEP and right-padded to ``length``."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.full((n, length), PAD, dtype=torch.long)
    lengths = torch.randint(3, length + 1, (n,), generator=gen)
    for i, size in enumerate(lengths.tolist()):
        ids[i, :size] = torch.randint(3, vocab, (size,), generator=gen)
        ids[i, 0], ids[i, size - 1] = CLS, SEP
    return ids


def save_checkpoints(
    model: nn.Module, directory: str, count: int = 3, seed: int = 0, step: float = 0.1
) -> List[str]:
    r"""Saves ``count`` perturbed copies of ``model``, learning rates 0.5, 1.5, ..."""
    gen = torch.Generator().manual_seed(seed)
    paths = []
    for i in range(count):
        with torch.no_grad():
            for param in model.parameters():
                param.add_(step * torch.randn(param.shape, generator=gen))
        path = os.path.join(directory, f"checkpoint-{i}.pt")
        torch.save(
            {"model_state_dict": model.state_dict(), "learning_rate": 0.5 + i}, path
        )
        paths.append(path)
    return paths


def load_into(attribute: Optional[str] = None) -> Callable[[nn.Module, str], float]:
    r"""A loader for TracInCP that loads into ``model.<attribute>`` (for wrappers)."""

    def load(model: nn.Module, path: str) -> float:
        checkpoint = torch.load(path, weights_only=True)
        target = getattr(model, attribute) if attribute else model
        target.load_state_dict(checkpoint["model_state_dict"])
        return checkpoint["learning_rate"]

    return load


class LogitsOnly(nn.Module):
    r"""Wraps a Hugging Face classifier so that Captum's TracInCP can call it."""

    def __init__(self, hf_model: nn.Module) -> None:
        super().__init__()
        self.hf = hf_model

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        return self.hf(input_ids=input_ids, attention_mask=attention_mask).logits


def tracincp_oracle(
    model: nn.Module,
    layer: str,
    train: Dataset,
    test: Tuple[Tensor, ...],
    paths: Sequence[str],
    loader: Callable[[nn.Module, str], float],
) -> Tensor:
    r"""Captum's TracInCP restricted to the embedding table: the reference."""
    reference = TracInCP(
        model,
        train,
        list(paths),
        loader,
        layers=[layer],
        loss_fn=nn.CrossEntropyLoss(reduction="none"),
        batch_size=16,
    )
    return reference.influence(test)


def dict_dataset(ids: Tensor, labels: Tensor) -> List[Dict[str, Tensor]]:
    return [
        {"input_ids": i, "attention_mask": (i != PAD).long(), "labels": y}
        for i, y in zip(ids, labels)
    ]


def tiny_hf_classifier(family: str, classes: int = 3) -> nn.Module:
    r"""A config-built Hugging Face sequence classifier with untied embeddings."""
    import transformers as hf

    torch.manual_seed(0)
    common = dict(vocab_size=VOCAB, pad_token_id=PAD, num_labels=classes)
    if family == "bert":
        config = hf.BertConfig(
            hidden_size=16,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=32,
            max_position_embeddings=64,
            **common,
        )
        return hf.BertForSequenceClassification(config).eval()
    if family == "roberta":
        config = hf.RobertaConfig(
            hidden_size=16,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=32,
            max_position_embeddings=70,
            bos_token_id=CLS,
            eos_token_id=SEP,
            **common,
        )
        return hf.RobertaForSequenceClassification(config).eval()
    if family == "distilbert":
        config = hf.DistilBertConfig(
            dim=16,
            n_layers=2,
            n_heads=2,
            hidden_dim=32,
            max_position_embeddings=64,
            **common,
        )
        return hf.DistilBertForSequenceClassification(config).eval()
    if family == "gpt2":
        config = hf.GPT2Config(n_embd=16, n_layer=2, n_head=2, n_positions=64, **common)
        return hf.GPT2ForSequenceClassification(config).eval()
    raise ValueError(family)


def embedding_name(model: nn.Module) -> str:
    target = model.get_input_embeddings()
    return next(name for name, m in model.named_modules() if m is target)


def dense_reference(
    model: BagNet,
    train: Tuple[Tensor, Tensor],
    test: Tuple[Tensor, Tensor],
    paths: Sequence[str],
    top_k: Optional[int] = None,
    exclude: Sequence[int] = (),
    token_weights: Optional[Tensor] = None,
) -> Tensor:
    r"""
    TracIn-WE by brute force: one example at a time, the dense vocab x dim
    embedding-table gradient built from the positions that count, and a full dot
    product. Independent of the package's hooks, masks and sparse scoring.
    With ``token_weights``, row ``w`` of the product is weighted by
    ``token_weights[w]``.
    """
    loss_fn = nn.CrossEntropyLoss()
    total = torch.zeros(len(test[0]), len(train[0]), dtype=torch.float64)
    for path in paths:
        learning_rate = load_into()(model, path)
        model.eval()

        def table_gradient(ids: Tensor, label: Tensor) -> Tensor:
            embedded = model.emb.weight[ids].detach().requires_grad_(True)
            loss = loss_fn(
                model.from_embeddings(embedded[None], ids[None]), label[None]
            )
            (grad,) = torch.autograd.grad(loss, embedded)
            keep = [
                p
                for p in range(len(ids))
                if ids[p] != PAD and int(ids[p]) not in exclude
            ]
            if top_k is not None:
                keep = sorted(keep, key=lambda p: -float(grad[p].norm()))[:top_k]
            table = torch.zeros_like(model.emb.weight, dtype=torch.float64)
            for p in keep:
                table[ids[p]] += grad[p].double()
            return table.flatten()

        train_grads = torch.stack([table_gradient(i, y) for i, y in zip(*train)])
        test_grads = torch.stack([table_gradient(i, y) for i, y in zip(*test)])
        if token_weights is not None:
            rows = test_grads.view(len(test_grads), *model.emb.weight.shape)
            test_grads = (rows * token_weights.double()[None, :, None]).flatten(1)
        total += learning_rate * test_grads @ train_grads.T
    return total


def bag_setup(tmpdir: str, n_train: int = 24, n_test: int = 6, length: int = 9):
    torch.manual_seed(0)
    model = BagNet().eval()
    ids = random_ids(n_train + n_test, length, seed=1)
    labels = torch.randint(
        0, 3, (n_train + n_test,), generator=torch.Generator().manual_seed(2)
    )
    paths = save_checkpoints(model, tmpdir)
    train = TensorDataset(ids[:n_train], labels[:n_train])
    test = (ids[n_train:], labels[n_train:])
    return model, train, test, paths


def assert_close(actual: Tensor, expected: Tensor, rel: float = 1e-5) -> None:
    actual, expected = actual.double(), expected.double()
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    scale = expected.abs().max().clamp(min=1e-12)
    error = (actual - expected).abs().max() / scale
    assert error <= rel, f"max relative error {float(error):.3g} > {rel}"


def chromium() -> Optional[str]:
    r"""Debian's Chromium, if installed."""
    import shutil

    return shutil.which("chromium") or shutil.which("chromium-browser")


def chromium_flags(profile: str) -> List[str]:
    r"""Headless Chromium that reaches nothing outside the page it is given."""
    return [
        chromium() or "chromium",
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--virtual-time-budget=3000",
        f"--user-data-dir={profile}",
    ]
