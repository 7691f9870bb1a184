#!/usr/bin/env python3

r"""Shared pieces of the benchmarks: timing, conditions, models and loaders."""

import os
import platform
import time
from typing import Any, Callable, Dict, List, Sequence, Tuple

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader


# Captum's TracInCP called directly (the oracles and timings of the
# benchmarks) needs tuple batches and a logits-only model; the package's
# public `tracincp_fast` / `tracincp` do this for users.
class LogitsOnly(nn.Module):
    r"""Calls a Hugging Face classifier with Captum's tuple batches, returns logits."""

    def __init__(self, hf_model: nn.Module) -> None:
        super().__init__()
        self.hf = hf_model

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        return self.hf(input_ids=input_ids, attention_mask=attention_mask).logits


def load_into_wrapper(model: nn.Module, path: str) -> float:
    r"""A ``checkpoints_load_func`` for :class:`LogitsOnly` (HF state dicts)."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    model.hf.load_state_dict(checkpoint["model_state_dict"])
    model.eval()
    return float(checkpoint.get("learning_rate", 1.0))


def tuple_loader(
    features: List[Dict[str, Any]],
    batch_size: int,
    pad_id: int = 0,
    device: str = "cpu",
) -> DataLoader:
    r"""
    ``(input_ids, attention_mask, labels)`` batches, padded per batch, on
    ``device`` (Captum's TracInCPFast does not move batches to the model).
    """

    def collate(items: Sequence[Dict[str, Any]]) -> Tuple[Tensor, Tensor, Tensor]:
        width = max(len(item["input_ids"]) for item in items)
        ids = torch.full((len(items), width), pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, item in enumerate(items):
            ids[i, : len(item["input_ids"])] = torch.tensor(item["input_ids"])
            mask[i, : len(item["input_ids"])] = 1
        labels = torch.tensor([item["labels"] for item in items])
        return ids.to(device), mask.to(device), labels.to(device)

    return DataLoader(features, batch_size=batch_size, collate_fn=collate)


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


def _classifier_loss(model: nn.Module, batch: Any) -> Tensor:
    ids, mask, labels = batch
    return nn.functional.cross_entropy(model(ids, mask), labels, reduction="sum")


def floor_time(
    model: nn.Module,
    embedding: nn.Embedding,
    paths: Sequence[str],
    batches: Sequence[Any],
    load: Callable[[nn.Module, str], float],
    batch_loss: Callable[[nn.Module, Any], Tensor] = _classifier_loss,
) -> float:
    r"""
    The floor of TracIn-WE: per checkpoint, load it, then one forward and one
    backward to the embedding output per batch, nothing else.

    Args:
        batch_loss (callable, optional): ``batch_loss(model, batch)``, the
                    summed loss of one batch. Default: cross-entropy of
                    ``model(ids, mask)`` on ``(ids, mask, labels)`` batches
    """
    captured: List[Tensor] = []

    def hook(module: nn.Module, inputs: Any, output: Tensor) -> Tensor:
        leaf = output.detach().requires_grad_(True)
        captured.append(leaf)
        return leaf

    for param in model.parameters():
        param.requires_grad_(False)
    handle = embedding.register_forward_hook(hook)
    start = time.perf_counter()
    for path in paths:
        load(model, path)
        for batch in batches:
            captured.clear()
            with torch.enable_grad():
                torch.autograd.grad(batch_loss(model, batch), captured[0])
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


def previous_package(revision: str) -> str:
    r"""
    A folder whose ``captum_tracin_we`` is the package at git ``revision`` of
    this repository (a detached worktree under benchmarks/_out), to put first
    on ``PYTHONPATH`` of a subprocess, so that a benchmark measures the
    previous code path beside the current one in the same run.

    Returns:
        path (str): The folder (it holds only a link to that package).
    """
    import subprocess

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    commit = subprocess.run(
        ["git", "-C", root, "rev-parse", "--short", revision],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    tree = os.path.join(root, "benchmarks", "_out", f"previous-{commit}")
    if not os.path.isdir(tree):
        subprocess.run(
            ["git", "-C", root, "worktree", "add", "--detach", tree, commit],
            check=True,
            capture_output=True,
        )
    folder = tree + "-path"
    os.makedirs(folder, exist_ok=True)
    link = os.path.join(folder, "captum_tracin_we")
    if not os.path.islink(link):
        os.symlink(os.path.join(tree, "captum_tracin_we"), link)
    return folder
