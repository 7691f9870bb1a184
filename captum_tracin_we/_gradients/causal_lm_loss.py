#!/usr/bin/env python3

r"""
The loss of a causal language model, one number per example: the
cross-entropy of each predicted token given the tokens before it, summed (or
averaged) over the example's predicted tokens, ``-100`` labels ignored. So a
prompt labelled ``-100`` is context, and only the completion is explained.
"""

from typing import Optional

import torch
from torch import Tensor
from torch.nn import Module
from torch.nn.functional import cross_entropy

from captum_tracin_we._data.batch_labels import IGNORE_INDEX, lm_labels

_PER_TOKEN = ("sum", "mean")


def checked_per_token(per_token: object) -> str:
    if per_token not in _PER_TOKEN:
        raise ValueError(
            f"`per_token` must be 'sum' or 'mean' (how an example's token losses "
            f"make its loss); got {per_token!r}."
        )
    return str(per_token)


def token_losses(logits: Tensor, labels: Tensor) -> Tensor:
    r"""
    The loss of every predicted token, at the position of the token predicted.

    Args:
        logits (Tensor): ``(B, L, V)`` logits; position ``t`` predicts token
                    ``t + 1``.
        labels (Tensor): ``(B, L)`` token ids, unshifted (as ``input_ids``),
                    ``-100`` where a token is not predicted; ``labels[:, 0]``
                    is never predicted (nothing comes before it).

    Returns:
        losses (Tensor): ``(B, L)`` float, ``-log p(labels[b, t] | tokens < t)``
                    at predicted positions, 0 elsewhere (column 0 always 0).

    Raises:
        BatchError: For logits or labels a causal language-model loss cannot
                    take, or an example with no token to predict.
    """
    labels = lm_labels(logits, labels)
    batch, length, vocab = logits.shape
    shifted = logits[:, :-1].reshape(-1, vocab)
    targets = labels[:, 1:].reshape(-1)
    losses = cross_entropy(
        shifted, targets, ignore_index=IGNORE_INDEX, reduction="none"
    ).reshape(batch, length - 1)
    return torch.cat([losses.new_zeros(batch, 1), losses], dim=1)


def causal_lm_loss(logits: Tensor, labels: Tensor, per_token: str = "sum") -> Tensor:
    r"""
    The per-example loss of a causal language model: Hugging Face's
    ``ForCausalLM`` loss (logits shifted by one, ``-100`` ignored), but one
    number per example instead of one mean over the batch's tokens, so that
    scores do not depend on which examples share a batch.

    Args:
        logits (Tensor): ``(B, L, V)`` logits of the model.
        labels (Tensor): ``(B, L)`` token ids, unshifted, ``-100`` where not
                    predicted (the prompt, padding).
        per_token (str, optional): ``"sum"``: the sum of the example's token
                    losses, its negative log-likelihood (then per-token scores
                    add up to the example's score); ``"mean"``: their mean
                    (each example weighs the same whatever its length).
                    Default: ``"sum"``

    Returns:
        losses (Tensor): ``(B,)`` float, >= 0.

    Raises:
        BatchError: For logits or labels a causal language-model loss cannot
                    take, or an example with no token to predict.
    """
    per_token = checked_per_token(per_token)
    losses = token_losses(logits, labels)
    total = losses.sum(1)
    if per_token == "mean":
        total = total / (labels[:, 1:] != IGNORE_INDEX).sum(1).to(total.dtype)
    return total


class CausalLMLoss(Module):
    r"""
    :func:`causal_lm_loss` as a loss module for ``loss_fn=`` of TracInWE,
    :class:`~captum_tracin_we.TracInLayers` and Captum's ``TracInCP``: one loss
    per example (``reduction`` is ``"none"``, which Captum reads).

    Args:
        per_token (str, optional): ``"sum"`` or ``"mean"`` of an example's token
                    losses (see :func:`causal_lm_loss`). Default: ``"sum"``
    """

    reduction = "none"

    def __init__(self, per_token: str = "sum") -> None:
        super().__init__()
        self.per_token = checked_per_token(per_token)

    def forward(self, logits: Tensor, labels: Tensor) -> Tensor:
        r"""
        Args:
            logits (Tensor): ``(B, L, V)``.
            labels (Tensor): ``(B, L)``, ``-100`` where not predicted.

        Returns:
            losses (Tensor): ``(B,)`` per-example losses.
        """
        return causal_lm_loss(logits, labels, self.per_token)

    def extra_repr(self) -> str:
        return f"per_token={self.per_token!r}"


def is_causal_lm_loss(loss_fn: Optional[object]) -> bool:
    return isinstance(loss_fn, CausalLMLoss)
