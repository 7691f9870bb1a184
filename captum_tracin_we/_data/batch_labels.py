#!/usr/bin/env python3

r"""The labels of a batch, checked against the loss."""

from typing import Callable

import torch
from torch import Tensor
from torch.nn import CrossEntropyLoss

from captum_tracin_we._errors import BatchError


def class_labels(labels: Tensor, loss_fn: Callable[..., Tensor]) -> Tensor:
    r"""
    Checks the labels of a batch; for cross-entropy losses, ``(B, 1)`` class ids
    become ``(B,)``, and float labels of shape ``(B,)`` are refused (cross-entropy
    reads them as class probabilities).

    Raises:
        BatchError: For no labels, or labels cross-entropy cannot take.
    """
    if labels.dim() == 0 or labels.shape[0] == 0:
        raise BatchError(
            "A batch is empty or has no per-example labels; pass at least one example "
            "with one label each."
        )
    if not isinstance(loss_fn, CrossEntropyLoss):
        return labels
    if labels.dtype == torch.bool:
        raise BatchError(
            "The labels are booleans; cross-entropy needs integer class ids: convert "
            "them with `labels.long()`."
        )
    if not labels.is_floating_point() and labels.dtype != torch.long:
        labels = labels.long()  # int32, int16, uint8 class ids: exact
    if labels.dim() == 2 and labels.shape[1] == 1 and not labels.is_floating_point():
        labels = labels[:, 0]
    if labels.dim() == 1 and labels.is_floating_point():
        raise BatchError(
            f"The labels are floats ({labels.dtype}), but the loss is cross-entropy, "
            "which needs integer class ids: convert them with `labels.long()`, or "
            "pass a `loss_fn` that takes float targets."
        )
    if labels.dim() != 1 and not labels.is_floating_point():
        raise BatchError(
            f"The labels have shape {tuple(labels.shape)}; cross-entropy needs one "
            "integer class id per example, shape (B,)."
        )
    return labels
