#!/usr/bin/env python3

r"""Shared pieces of the benchmarks: timing, conditions, models and loaders."""

import os
import platform
import time
from typing import Any, Callable, List, Sequence, Tuple

import torch
from torch import Tensor, nn

from captum_tracin_we._demo.compare import (  # noqa: F401  (re-exported)
    LogitsOnly,
    load_into_wrapper,
    tuple_loader,
)


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


def ratio_lines(result: Any, method: str = "TracIn-WE") -> List[str]:
    r"""AUC-DEL of ``method`` against TracInCPFast, as report lines (target 4x)."""
    lines = []
    for metric in ("DEL+", "DEL-"):
        a = result.auc(method, metric)[0]
        b = result.auc("TracInCPFast (last layer)", metric)[0]
        verdict = (
            f"ratio {a / b:.1f}x (target >= 4x)"
            if a * b > 0
            else "opposite signs, so no ratio: only one moves the right way"
        )
        lines.append(
            f"- AUC-{metric}: {method} {a:+.4f} vs TracInCPFast {b:+.4f}: {verdict}"
        )
    return lines
