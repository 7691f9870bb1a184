#!/usr/bin/env python3

r"""Last-layer TracInCPFast on the same model, data and checkpoints, for comparison."""

from typing import Any, Dict, List, Sequence, Tuple

import torch
from captum.influence import TracInCPFast
from torch import Tensor, nn
from torch.utils.data import DataLoader


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


def last_linear_name(model: nn.Module) -> str:
    r"""Dotted name of the last ``nn.Linear`` (the classifier head)."""
    names = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not names:
        raise ValueError("The model has no nn.Linear head for TracInCPFast.")
    return names[-1]


def tracincp_fast(
    hf_model: nn.Module,
    train_features: List[Dict[str, Any]],
    paths: List[str],
    pad_id: int,
) -> Tuple[TracInCPFast, nn.Module]:
    r"""Captum's TracInCPFast on the model's last linear layer."""
    wrapper = LogitsOnly(hf_model).eval()
    fast = TracInCPFast(
        wrapper,
        "hf." + last_linear_name(hf_model),
        tuple_loader(train_features, 64, pad_id),
        paths,
        load_into_wrapper,
        loss_fn=nn.CrossEntropyLoss(reduction="sum"),
        batch_size=None,
    )
    return fast, wrapper


def last_layer_influence(
    hf_model: nn.Module,
    train_features: List[Dict[str, Any]],
    checkpoints: Sequence[Any],
    load_func: Any,
    pad_id: int,
    test_batch: Dict[str, Tensor],
    show_progress: bool = False,
) -> Tensor:
    r"""
    ``(n_test, n_train)`` scores of Captum's TracInCPFast on the model's last
    linear layer, with the same checkpoints and loader as TracIn-WE.
    """
    wrapper = LogitsOnly(hf_model).eval()

    def load(model: nn.Module, checkpoint: Any) -> float:
        rate = load_func(model.hf, checkpoint)
        model.eval()
        return float(rate)

    fast = TracInCPFast(
        wrapper,
        "hf." + last_linear_name(hf_model),
        tuple_loader(train_features, 64, pad_id),
        list(checkpoints),
        load,
        loss_fn=nn.CrossEntropyLoss(reduction="sum"),
        batch_size=None,
    )
    test = (test_batch["input_ids"], test_batch["attention_mask"], test_batch["labels"])
    return fast.influence(test, show_progress=show_progress)
