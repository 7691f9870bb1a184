#!/usr/bin/env python3

r"""Shared pieces of the benchmarks: timing, conditions, models and loaders."""

import os
import platform
import time
from typing import Any, Callable, Dict, List, Sequence, Tuple

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader


def conditions() -> str:
    return (
        f"python {platform.python_version()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
        f"{platform.machine()}"
    )


def timed(fn: Callable[[], Any]) -> Tuple[Any, float]:
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


class LogitsOnly(nn.Module):
    r"""Captum's TracInCP/TracInCPFast need a model that returns a logits tensor."""

    def __init__(self, hf_model: nn.Module) -> None:
        super().__init__()
        self.hf = hf_model

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        return self.hf(input_ids=input_ids, attention_mask=attention_mask).logits


def load_into_wrapper(model: nn.Module, path: str) -> float:
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    model.hf.load_state_dict(checkpoint["model_state_dict"])
    model.eval()
    return float(checkpoint["learning_rate"])


def tuple_loader(
    features: List[Dict[str, Any]],
    batch_size: int,
    pad_id: int = 0,
    device: str = "cpu",
) -> DataLoader:
    r"""
    (input_ids, attention_mask, labels) batches, padded per batch, on ``device``
    (Captum's TracInCPFast does not move batches to the model's device).
    """

    def collate(items: Sequence[Dict[str, Any]]) -> Tuple[Tensor, Tensor, Tensor]:
        width = max(len(item["input_ids"]) for item in items)
        ids = torch.full((len(items), width), pad_id, dtype=torch.long)
        for i, item in enumerate(items):
            ids[i, : len(item["input_ids"])] = torch.tensor(item["input_ids"])
        labels = torch.tensor([item["labels"] for item in items])
        return ids.to(device), (ids != pad_id).long().to(device), labels.to(device)

    return DataLoader(features, batch_size=batch_size, collate_fn=collate)


def floor_time(
    model: nn.Module,
    embedding: nn.Embedding,
    paths: Sequence[str],
    batches: Sequence[Any],
    load: Callable[[nn.Module, str], float],
) -> float:
    r"""
    The floor of TracIn-WE: per checkpoint, load it, then one forward and one
    backward to the embedding output per batch, nothing else.
    """
    captured: List[Tensor] = []

    def hook(module: nn.Module, inputs: Any, output: Tensor) -> Tensor:
        leaf = output.detach().requires_grad_(True)
        captured.append(leaf)
        return leaf

    for param in model.parameters():
        param.requires_grad_(False)
    handle = embedding.register_forward_hook(hook)
    loss_fn = nn.CrossEntropyLoss(reduction="sum")
    start = time.perf_counter()
    for path in paths:
        load(model, path)
        for ids, mask, labels in batches:
            captured.clear()
            with torch.enable_grad():
                loss = loss_fn(model(ids, mask), labels)
                torch.autograd.grad(loss, captured[0])
    elapsed = time.perf_counter() - start
    handle.remove()
    for param in model.parameters():
        param.requires_grad_(True)
    return elapsed
