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


IGNORE_INDEX = -100


def lm_labels(logits: Tensor, labels: Tensor) -> Tensor:
    r"""
    Checks the labels of a causal language-model batch: ``(B, L)`` integer
    token ids aligned with the ``(B, L, V)`` logits (unshifted, as Hugging Face
    takes them: position ``t`` holds the token predicted from positions
    ``< t``), each a token id in ``[0, V)`` or ``-100`` (not predicted).

    Returns:
        labels (Tensor): ``(B, L)`` long.

    Raises:
        BatchError: For logits or labels of another shape, float or boolean
                    labels, ids out of range, or an example with no token to
                    predict (every label after the first is ``-100``).
    """
    if logits.dim() != 3:
        raise BatchError(
            f"The model's logits have shape {tuple(logits.shape)}, but a causal "
            "language-model loss needs (batch, positions, vocabulary) logits: load "
            "the model with a language-model head (AutoModelForCausalLM), not "
            "AutoModel or a classifier."
        )
    if labels.dtype == torch.bool or labels.is_floating_point():
        raise BatchError(
            f"The labels are {labels.dtype}; a causal language-model loss needs "
            "integer token ids (B, L), -100 where a token is not predicted: pass "
            "`labels=input_ids` with the prompt and padding set to -100."
        )
    if tuple(labels.shape) != tuple(logits.shape[:2]):
        raise BatchError(
            f"The labels have shape {tuple(labels.shape)} for logits of shape "
            f"{tuple(logits.shape)}; a causal language-model loss needs one label "
            "per position, shape (B, L) like input_ids (unshifted; -100 where a "
            "token is not predicted)."
        )
    labels = labels.long()
    vocab = logits.shape[-1]
    bad = (labels != IGNORE_INDEX) & ((labels < 0) | (labels >= vocab))
    if bool(bad.any()):
        row, column = (int(i) for i in bad.nonzero()[0])
        raise BatchError(
            f"Label {int(labels[row, column])} at position {column} of example {row} "
            f"of the batch is neither a token id of the vocabulary of {vocab} nor "
            "-100 (not predicted). Tokenize with the model's tokenizer and mark "
            "ignored positions with -100."
        )
    predicted = (labels[:, 1:] != IGNORE_INDEX).sum(1)
    empty = (predicted == 0).nonzero().flatten().tolist()
    if empty:
        raise BatchError(
            f"Example(s) {empty[:10]} of the batch have no token to predict: every "
            "label after the first is -100 (a prompt that fills the window leaves no "
            "completion token after truncation, or the completion is empty). "
            "Shorten the prompt or raise `max_length`, give a non-empty completion, "
            "or drop the example."
        )
    return labels
