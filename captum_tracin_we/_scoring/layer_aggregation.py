#!/usr/bin/env python3

r"""
Combining influence scores over columns (layers, test examples, or both) into
one score per training example, as in the layer-choice study of Vitel &
Chhabra (arXiv 2511.04715): the plain sum or mean, **Rank** (each column
ranks the training examples; the mean rank) and **Vote** (each column votes
against its ``k`` lowest-ranked examples). Every rule keeps the sign
convention: higher means more of a proponent, lower more of an opponent.
"""

from typing import Dict, Optional

import torch
from torch import Tensor

from captum_tracin_we._errors import TracInWEError

AGGREGATIONS = ("sum", "mean", "rank", "vote")


def ascending_ranks(columns: Tensor) -> Tensor:
    r"""
    Each training example's rank in each column, 0 for the lowest score.

    Args:
        columns (Tensor): ``(n_columns, n_train)`` scores.

    Returns:
        ranks (Tensor): ``(n_columns, n_train)`` float64 ranks (ties keep the
                    examples' order).
    """
    order = torch.argsort(columns, dim=1, stable=True)
    ranks = torch.empty_like(order)
    positions = torch.arange(columns.shape[1], device=columns.device)
    ranks.scatter_(1, order, positions.expand_as(order).contiguous())
    return ranks.double()


def aggregate_columns(
    columns: Tensor, how: str = "sum", k: Optional[int] = None
) -> Tensor:
    r"""
    One score per training example from several columns of scores.

    Args:
        columns (Tensor): ``(n_columns, n_train)``: for example one row per
                    (layer, test example).
        how (str, optional): ``"sum"``, ``"mean"``, ``"rank"`` (the mean
                    ascending rank: 0 is the lowest score) or ``"vote"``
                    (``-sum over columns of max(k - rank, 0)``: a column's
                    ``k`` lowest examples lose ``k``, ``k - 1``, ... points).
                    Default: ``"sum"``
        k (int, optional): The votes per column for ``"vote"``. Default: None,
                    meaning 20% of the training examples (rounded), as in the
                    study.

    Returns:
        scores (Tensor): ``(n_train,)`` float64; sorted ascending, the most
                    harmful training examples come first.

    Raises:
        TracInWEError: If ``how`` is not one of the rules, or ``columns`` is not
                    a non-empty 2-D tensor.
    """
    if how not in AGGREGATIONS:
        raise TracInWEError(f"`how` must be one of {AGGREGATIONS}; got {how!r}.")
    if not isinstance(columns, Tensor) or columns.dim() != 2 or columns.numel() == 0:
        raise TracInWEError(
            "`columns` must be a non-empty (n_columns, n_train) tensor of scores."
        )
    columns = columns.double()
    if how == "sum":
        return columns.sum(0)
    if how == "mean":
        return columns.mean(0)
    ranks = ascending_ranks(columns)
    if how == "rank":
        return ranks.mean(0)
    votes = round(0.2 * columns.shape[1]) if k is None else k
    return -(votes - ranks).clamp(min=0).sum(0)


def combine_layers(
    scores: Dict[str, Tensor], how: str = "sum", k: Optional[int] = None
) -> Tensor:
    r"""
    Combines per-layer scores into one ``(n_test, n_train)`` matrix, test example
    by test example, over the layers as columns. ``"sum"`` is TracIn over the
    union of the layers' parameters.

    Args:
        scores (dict): Layer (or group) name -> ``(n_test, n_train)`` scores.
        how (str, optional): See :func:`aggregate_columns`. Default: ``"sum"``
        k (int, optional): See :func:`aggregate_columns`.

    Returns:
        combined (Tensor): ``(n_test, n_train)`` float64.
    """
    if not scores:
        raise TracInWEError("`scores` is empty; pass one score matrix per layer.")
    shapes = {tuple(s.shape) for s in scores.values()}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2:
        raise TracInWEError(
            "Every layer's scores must have the same (n_test, n_train) shape; "
            f"got {shapes}."
        )
    stacked = torch.stack([s.double() for s in scores.values()], dim=1)
    return torch.stack([aggregate_columns(test, how, k) for test in stacked])
