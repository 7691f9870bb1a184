#!/usr/bin/env python3

r"""
The loss of a batch as the sum of its examples' losses, so that every score is
per example: a loss module's own normalisation (a mean, class weights,
``ignore_index``) is undone exactly, and one that cannot be undone is refused.
"""

import copy
from typing import Callable

import torch
from torch import Tensor
from torch.nn import CrossEntropyLoss, Module, NLLLoss

from captum_tracin_we._errors import BatchError


def check_labels(logits: Tensor, labels: Tensor, first_index: int) -> None:
    if labels.shape[:1] != logits.shape[:1]:
        raise BatchError(
            f"The batch has {labels.shape[0] if labels.dim() else 1} labels for "
            f"{logits.shape[0]} model outputs; each example needs one label."
        )
    if logits.dim() != 2 or labels.is_floating_point() or labels.dim() != 1:
        return
    num_classes = logits.shape[1]
    bad = ((labels < 0) | (labels >= num_classes)).nonzero().flatten()
    if bad.numel():
        i = int(bad[0])
        raise BatchError(
            f"Label {int(labels[i])} of example {first_index + i} is out of range for "
            f"a model with {num_classes} classes (expected 0..{num_classes - 1})."
        )


def summed_loss(
    loss_fn: Callable[..., Tensor], logits: Tensor, labels: Tensor, first_index: int
) -> Tensor:
    r"""
    The sum of the per-example losses of the batch, whatever the reduction.

    A ``torch.nn`` loss module that reduces (``"mean"``, ``"sum"``,
    ``"batchmean"``) is evaluated again with ``reduction="none"`` and its own
    normalisation undone (see :func:`_unreduced_module_loss`); a function that
    returns one number is probed (see :func:`_probed_reduction`).

    Raises:
        BatchError: If the loss fails, has the wrong shape, is not finite, or
                    reduces the batch in a way per-example losses cannot be
                    recovered from.
    """
    loss = _called_loss(loss_fn, logits, labels, first_index)
    batch_size = logits.shape[0]
    if loss.dim() == 0:
        if _reduces_itself(loss_fn):
            return _unreduced_module_loss(loss_fn, logits, labels, loss, first_index)
        reduction = None
        if torch.isfinite(loss):
            reduction = _probed_reduction(loss_fn, logits, labels, loss)
        total = loss * batch_size if reduction == "mean" else loss
        if not torch.isfinite(total):
            bad = ~torch.isfinite(logits).reshape(batch_size, -1).all(1)
            raise_non_finite(bad if bad.any() else torch.ones_like(bad), first_index)
        return total
    return _per_example_losses(loss, batch_size, first_index).sum()


def _called_loss(
    loss_fn: Callable[..., Tensor], logits: Tensor, labels: Tensor, first_index: int
) -> Tensor:
    try:
        return loss_fn(logits, labels)
    except (RuntimeError, ValueError, TypeError, IndexError) as error:
        raise BatchError(
            f"`loss_fn(logits, labels)` failed at the batch starting with example "
            f"{first_index}, for logits of shape {tuple(logits.shape)} and labels of "
            f"shape {tuple(labels.shape)} ({labels.dtype}): {type(error).__name__}: "
            f"{str(error)[:300]}. Pass labels and a `loss_fn` that fit the model's "
            "output."
        ) from error


def _per_example_losses(loss: Tensor, batch_size: int, first_index: int) -> Tensor:
    r"""``(B,)`` losses from per-example (or per-element) ones, each summed."""
    if loss.dim() == 0 or loss.shape[0] != batch_size:
        raise BatchError(
            f"`loss_fn` returned shape {tuple(loss.shape)} for a batch of "
            f"{batch_size}; use reduction 'none' (one loss per example), 'sum' or "
            "'mean'."
        )
    per_example = loss.reshape(batch_size, -1).sum(1)
    raise_non_finite(~torch.isfinite(per_example), first_index)
    return per_example


def _reduces_itself(loss_fn: Callable[..., Tensor]) -> bool:
    r"""True for a module whose ``reduction`` attribute names a reduction."""
    reduction = getattr(loss_fn, "reduction", None)
    return (
        isinstance(loss_fn, Module)
        and isinstance(reduction, str)
        and (reduction != "none")
    )


_UNDONE_REDUCTIONS = ("mean", "sum", "batchmean")


def _unreduced_module_loss(
    loss_fn: Module, logits: Tensor, labels: Tensor, loss: Tensor, first_index: int
) -> Tensor:
    r"""
    The summed per-example losses of a reducing loss module: the module's
    ``reduction="none"`` losses (of a shallow copy), each example's summed,
    after checking that the module's own value is their sum divided by the
    normaliser this library knows for it (1 for ``"sum"``, the batch size for
    ``"batchmean"``, and for ``"mean"``: the number of elements, or, for
    :class:`~torch.nn.CrossEntropyLoss` and :class:`~torch.nn.NLLLoss` with
    class ids, the summed class weights of the targets not ignored). The
    scores are then exact and do not depend on the batch size.

    Raises:
        BatchError: If the reduction is unknown, the module cannot be evaluated
                    with ``reduction="none"``, or its value does not reconcile.
    """
    reduction = loss_fn.reduction
    if reduction not in _UNDONE_REDUCTIONS:
        raise _irreducible(loss_fn, "TracIn-WE does not know how it normalises")
    unreduced = _called_loss(_unreduced_copy(loss_fn), logits, labels, first_index)
    if unreduced.dim() == 0 or unreduced.shape[0] != logits.shape[0]:
        raise _irreducible(
            loss_fn,
            f"with reduction='none' it returns shape {tuple(unreduced.shape)}, not "
            f"one loss per example of the batch of {logits.shape[0]}",
        )
    per_example = _per_example_losses(unreduced, logits.shape[0], first_index)
    _check_reconciles(loss_fn, loss.detach(), unreduced.detach(), labels)
    return per_example.sum()


def _check_reconciles(
    loss_fn: Module, loss: Tensor, unreduced: Tensor, labels: Tensor
) -> None:
    r"""
    Raises unless ``loss`` is the sum of ``unreduced`` divided by
    :func:`_normaliser` (a batch whose targets are all ignored, where the
    module's mean is 0 / 0, reconciles: its losses are all zero).
    """
    normaliser = _normaliser(loss_fn, unreduced, labels)
    if normaliser == 0 and not bool(unreduced.any()):
        return
    expected = unreduced.sum() / normaliser
    scale = float(unreduced.abs().sum() / normaliser)
    rtol = 1e-4 if loss.dtype in (torch.float32, torch.float64) else 1e-2
    if not bool(torch.isclose(loss, expected, rtol=rtol, atol=1e-5 * scale + 1e-12)):
        raise _irreducible(
            loss_fn,
            f"its value {float(loss):.6g} is not the sum of its reduction='none' "
            f"losses divided by {float(normaliser):.6g} ({float(expected):.6g}), "
            "which is what TracIn-WE can undo",
        )


def _unreduced_copy(loss_fn: Module) -> Module:
    r"""A shallow copy of ``loss_fn`` (weights shared) with reduction 'none'."""
    unreduced = copy.copy(loss_fn)
    try:
        unreduced.reduction = "none"
    except (AttributeError, TypeError) as error:
        raise _irreducible(
            loss_fn, f"its reduction cannot be set to 'none' ({error})"
        ) from None
    return unreduced


def _normaliser(loss_fn: Module, unreduced: Tensor, labels: Tensor) -> Tensor:
    r"""What ``loss_fn`` divides the sum of its unreduced losses by."""
    one = torch.ones((), dtype=unreduced.dtype, device=unreduced.device)
    if loss_fn.reduction == "sum":
        return one
    if loss_fn.reduction == "batchmean":
        return one * unreduced.shape[0]
    if isinstance(loss_fn, (CrossEntropyLoss, NLLLoss)) and not (
        labels.is_floating_point()
    ):
        kept = labels[labels != loss_fn.ignore_index]
        weight = loss_fn.weight
        if weight is None:
            return one * kept.numel()
        return weight.to(unreduced.device)[kept].sum().to(unreduced.dtype)
    return one * unreduced.numel()


def _irreducible(loss_fn: Module, reason: str) -> BatchError:
    name = type(loss_fn).__name__
    return BatchError(
        f"`loss_fn` ({name} with reduction={loss_fn.reduction!r}) reduces each "
        f"batch in a way per-example losses cannot be recovered from: {reason}; "
        "scores would depend on the batch size. Pass the same loss with "
        f"reduction='none' (one loss per example, e.g. {name}(..., "
        "reduction='none')) or reduction='sum'."
    )


def _probed_reduction(
    loss_fn: Callable[..., Tensor], logits: Tensor, labels: Tensor, loss: Tensor
) -> str:
    r"""
    Tells a summing from an averaging scalar loss without a ``reduction``
    attribute: on the batch repeated twice a sum doubles and a mean stays; and
    split into its first example and the rest, a sum (or a mean weighted by
    the sizes) adds up.

    Raises:
        BatchError: If the loss is neither (then per-example losses cannot be
                    recovered from it).
    """
    with torch.no_grad():
        logits, single = logits.detach(), loss.detach()
        doubled = loss_fn(torch.cat([logits] * 2), torch.cat([labels] * 2))
        reduction = None
        if torch.isclose(doubled, 2 * single, rtol=1e-4, atol=1e-12):
            reduction = "sum"
        elif torch.isclose(doubled, single, rtol=1e-4, atol=1e-12):
            reduction = "mean"
        size = logits.shape[0]
        if reduction is not None and size > 1:
            head = loss_fn(logits[:1], labels[:1])
            rest = loss_fn(logits[1:], labels[1:])
            if reduction == "mean":
                head, rest, single = head, rest * (size - 1), single * size
            if not torch.isclose(head + rest, single, rtol=1e-4, atol=1e-10):
                reduction = None
    if reduction is None:
        raise BatchError(
            "`loss_fn` returns one number per batch that is neither the sum nor the "
            "mean of per-example losses (a mean weighted by class weights, such as "
            "F.cross_entropy(..., weight=w), is neither), so per-example gradients "
            "cannot be recovered. Return one loss per example (reduction='none'), "
            "or pass nn.CrossEntropyLoss(weight=w), whose weighting TracIn-WE undoes."
        )
    return reduction


def raise_non_finite(bad: Tensor, first_index: int) -> None:
    indices = (bad.nonzero().flatten() + first_index).tolist()
    if indices:
        raise BatchError(
            f"The loss is NaN or infinite for example(s) {indices[:10]}. Check those "
            "inputs and labels, and that the checkpoint's weights are finite."
        )
