#!/usr/bin/env python3

r"""The explorer's audit: training examples ranked by self-influence, where
mislabeled and odd examples surface."""

from typing import Any, List, Optional

import torch
from torch import Tensor


def audit_order(
    self_influence: Tensor,
    labels: List[int],
    predicted: Tensor,
    label: Optional[int],
    disagree: bool,
) -> List[int]:
    r"""
    Training indices by self-influence, largest first (ties in index order),
    only those with ``label`` (if given) and, with ``disagree``, only those
    whose prediction differs from their label.
    """
    order = torch.argsort(self_influence, descending=True, stable=True)
    return [
        int(i)
        for i in order
        if (label is None or labels[i] == label)
        and (not disagree or int(predicted[i]) != labels[i])
    ]


def _plain_self_influence(tracin: Any, show_progress: bool) -> Tensor:
    r"""The training set's self-influence for the audit, unnormalised: with
    ``normalize`` every example's score with itself is its learning-rate sum
    (``"cosine"``), which ranks nothing (:doc:`method`)."""
    normalize = getattr(tracin, "normalize", None)
    if normalize is None:
        return tracin.self_influence(show_progress=show_progress)
    tracin.normalize = None
    try:
        return tracin.self_influence(show_progress=show_progress)
    finally:
        tracin.normalize = normalize
