#!/usr/bin/env python3

r"""
Normalised gradients: each example's embedding-table gradient scaled to unit
norm at every checkpoint before the inner product (``"cosine"``, as TrackStar
and gradient-cosine methods do), or only the training side's (``"train"``,
relative influence). The norms are exact: the squared norm of an example's
gradient is the sum of its word rows' squared norms (its self score).
"""

from typing import Optional

import torch
from torch import Tensor

from captum_tracin_we._errors import TracInWEError
from captum_tracin_we._gradients.word_rows import WordRows

NORMALIZATIONS = (None, "cosine", "train")


def checked_normalize(normalize: Optional[str]) -> Optional[str]:
    r"""``normalize`` if it is one of :data:`NORMALIZATIONS`, else an error."""
    if normalize not in NORMALIZATIONS:
        raise TracInWEError(
            f"`normalize` must be None, 'cosine' (both gradients scaled to unit "
            f"norm per checkpoint) or 'train' (the training gradient only); got "
            f"{normalize!r}."
        )
    return normalize


def inverse_norms(squared_norms: Tensor) -> Tensor:
    r"""
    ``1 / sqrt(squared_norms)``, and 0 where the norm is 0: an example whose
    gradient is 0 at a checkpoint (a fitted example, or no counted token)
    scores 0 there, as it does unnormalised.

    Args:
        squared_norms (Tensor): ``(n,)`` squared gradient norms, >= 0.

    Returns:
        factors (Tensor): ``(n,)``, same dtype and device.
    """
    positive = squared_norms > 0
    safe = torch.where(positive, squared_norms, torch.ones_like(squared_norms))
    return torch.where(positive, safe.rsqrt(), torch.zeros_like(squared_norms))


def per_example_scaled(rows: WordRows, factors: Tensor) -> WordRows:
    r"""Every row of example ``i`` times ``factors[i]`` (``(num_examples,)``)."""
    factor = factors.to(rows.vectors)[rows.example_index]
    return WordRows(
        rows.example_index,
        rows.token_ids,
        rows.vectors * factor.unsqueeze(1),
        rows.num_examples,
    )


def self_score_factor(squared_norms: Tensor, normalize: Optional[str]) -> Tensor:
    r"""
    What an example's own (unnormalised) self score is multiplied by to give
    its normalised score with itself: ``1 / |g|^2`` for ``"cosine"`` (so 1,
    or the IDF-weighted share, per checkpoint), ``1 / |g|`` for ``"train"``
    (so ``|g|``), 1 without normalisation.

    Args:
        squared_norms (Tensor): ``(n,)`` unweighted squared gradient norms.
        normalize (str or None): See :data:`NORMALIZATIONS`.

    Returns:
        factors (Tensor): ``(n,)``.
    """
    if normalize is None:
        return torch.ones_like(squared_norms)
    inverse = inverse_norms(squared_norms)
    return inverse * inverse if normalize == "cosine" else inverse
