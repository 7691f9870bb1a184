#!/usr/bin/env python3

r"""Mislabel detection and retrain-free diagnostics of influence scores."""

from typing import Dict, Sequence, Tuple

import torch
from torch import Tensor

from captum_tracin_we._scoring.noise_detection import noise_detection_curve


def flip_labels(
    labels: Tensor, fraction: float, n_classes: int, seed: int = 0
) -> Tuple[Tensor, Tensor]:
    r"""
    Flips the labels of a random ``fraction`` of the examples to another class
    (drawn uniformly among the others).

    Returns:
        (noisy_labels, flipped): The new labels, and a bool mask of the flipped
                    examples.
    """
    if not 0 < fraction < 1:
        raise ValueError(f"`fraction` must be in (0, 1); got {fraction}.")
    generator = torch.Generator().manual_seed(seed)
    n = labels.numel()
    chosen = torch.randperm(n, generator=generator)[: round(fraction * n)]
    shift = torch.randint(1, n_classes, (chosen.numel(),), generator=generator)
    noisy = labels.clone()
    noisy[chosen] = (labels[chosen] + shift) % n_classes
    flipped = torch.zeros(n, dtype=torch.bool)
    flipped[chosen] = True
    return noisy, flipped


def mislabel_detection(
    scores: Tensor, flipped: Tensor, fractions: Sequence[float] = (0.05, 0.1, 0.2, 0.3)
) -> Dict[str, float]:
    r"""
    How well ranking training examples by ``scores`` (highest first, for example
    self-influence or loss) finds the flipped labels.

    Args:
        scores (Tensor): ``(n_train,)``; higher means more suspicious.
        flipped (Tensor): ``(n_train,)`` bool, the truly flipped examples.
        fractions (sequence of float, optional): Shares of the data inspected.
                    Default: (0.05, 0.1, 0.2, 0.3)

    Returns:
        metrics (dict): ``"roc_auc"`` (scikit-learn's ``roc_auc_score``) and, for
                    each fraction ``p``, ``"NDR@p"``: the share of all flipped
                    examples found among the top ``p`` of the ranking (the
                    noise detection rate of Vitel & Chhabra, a recall).
    """
    from sklearn.metrics import roc_auc_score

    scores, flipped = scores.detach().cpu().double(), flipped.cpu().bool()
    if scores.shape != flipped.shape or scores.dim() != 1:
        raise ValueError("`scores` and `flipped` must be 1-D and of the same length.")
    if not flipped.any() or flipped.all():
        raise ValueError("`flipped` must mark some, but not all, examples.")
    metrics = {"roc_auc": float(roc_auc_score(flipped.numpy(), scores.numpy()))}
    found = noise_detection_curve(-scores, flipped)  # highest score first
    for fraction in fractions:
        inspected = max(1, round(fraction * scores.numel()))
        metrics[f"NDR@{fraction:.0%}"] = float(found[inspected - 1])
    return metrics


def label_agreement(
    scores: Tensor, train_labels: Tensor, test_labels: Tensor, k: int = 10
) -> float:
    r"""
    Share of the top-``k`` proponents of each test example that carry the test
    example's label, averaged over test examples.
    """
    return listed_label_agreement(
        scores.topk(k, dim=1).indices, train_labels, test_labels
    )


def topk_cardinality(scores: Tensor, k: int = 10, proponents: bool = True) -> int:
    r"""
    Number of distinct training examples among the top-``k`` lists of all test
    examples. Ranges from ``k`` (every test example gets the same list) to
    ``n_test * k``; last-layer influence tends to sit near the low end.
    """
    return listed_cardinality(scores.topk(k, dim=1, largest=proponents).indices)


def listed_cardinality(indices: Tensor) -> int:
    r"""
    Number of distinct training examples in top-k lists.

    Args:
        indices (Tensor): ``(n_test, k)`` training-example indices.

    Returns:
        count (int): Between ``k`` and ``n_test * k``.
    """
    return int(indices.unique().numel())


def listed_label_agreement(
    indices: Tensor, train_labels: Tensor, test_labels: Tensor
) -> float:
    r"""
    Share of the listed training examples that carry their test example's
    label, averaged over test examples.

    Args:
        indices (Tensor): ``(n_test, k)`` training-example indices.
        train_labels (Tensor): ``(n_train,)`` labels.
        test_labels (Tensor): ``(n_test,)`` labels.

    Returns:
        share (float): In ``[0, 1]``.
    """
    return float((train_labels[indices] == test_labels[:, None]).float().mean())


def token_rank_correlation(first: Tensor, second: Tensor, mask: Tensor) -> Tensor:
    r"""
    Spearman rank correlation, per text, between two token-level
    attributions over the positions ``mask`` marks (ties get average ranks).

    Args:
        first (Tensor): ``(n, L)``, for example integrated gradients.
        second (Tensor): ``(n, L)``, for example TracIn-WE test-side
                    contributions.
        mask (Tensor): ``(n, L)`` bool, the positions compared.

    Returns:
        rho (Tensor): ``(n,)`` float64 in [-1, 1]; NaN where fewer than two
                    positions are marked, either side is constant there, or a
                    marked value is not finite.
    """
    if first.shape != second.shape or first.shape != mask.shape or first.dim() != 2:
        raise ValueError(
            "`first`, `second` and `mask` must all be (n, L); got "
            f"{tuple(first.shape)}, {tuple(second.shape)}, {tuple(mask.shape)}."
        )
    result = torch.full((first.shape[0],), float("nan"), dtype=torch.float64)
    for i in range(first.shape[0]):
        keep = mask[i].bool()
        a, b = first[i][keep].double(), second[i][keep].double()
        if a.numel() < 2 or not (a.isfinite().all() and b.isfinite().all()):
            continue
        a, b = _average_ranks(a), _average_ranks(b)
        a, b = a - a.mean(), b - b.mean()
        norm = a.norm() * b.norm()
        if norm > 0:
            result[i] = (a @ b) / norm
    return result


def _average_ranks(values: Tensor) -> Tensor:
    _, inverse, counts = torch.unique(values, return_inverse=True, return_counts=True)
    ends = counts.cumsum(0).double()
    return ((ends - counts + 1 + ends) / 2)[inverse]
