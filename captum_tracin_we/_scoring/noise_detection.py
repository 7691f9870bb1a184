#!/usr/bin/env python3

r"""
The noise detection rate (NDR) of Vitel & Chhabra (arXiv 2511.04715), with
their code's conventions (``dvitel/nn-infl``, ``src/exp.py``): training
examples sorted by score ascending (most harmful first); ``curve[i]`` is the
share of all noisy examples among the first ``i + 1``; **NDR@p** is
``curve[int(p * N)]``; **AUC-NDR** is ``sum(curve) / (N - n_noisy / 2)``, the
area under the ideal curve, so that a perfect ranking scores 1 (slightly
above, by at most ``1 / (2N - n_noisy)``, as in their code).
"""

from typing import Dict, Sequence

import torch
from torch import Tensor

from captum_tracin_we._errors import TracInWEError


def noise_detection_curve(scores: Tensor, noisy: Tensor) -> Tensor:
    r"""
    The share of the noisy examples found as the ranking is read.

    Args:
        scores (Tensor): ``(n_train,)``; lower means more harmful (an opponent
                    of the clean influence set). For a score where higher
                    means more suspicious (self-influence, loss), pass its
                    negative.
        noisy (Tensor): ``(n_train,)`` bool, the examples whose label was
                    changed.

    Returns:
        curve (Tensor): ``(n_train,)`` float64, nondecreasing, ending at 1.

    Raises:
        TracInWEError: If the shapes differ, the scores are not finite, or no
                    example (or every example) is noisy.
    """
    if not isinstance(scores, Tensor) or not isinstance(noisy, Tensor):
        raise TracInWEError("`scores` and `noisy` must be tensors.")
    scores, noisy = scores.detach().cpu().double(), noisy.detach().cpu().bool()
    if scores.dim() != 1 or scores.shape != noisy.shape:
        raise TracInWEError(
            f"`scores` {tuple(scores.shape)} and `noisy` {tuple(noisy.shape)} must be "
            "1-D with one entry per training example; combine a score matrix over "
            "its test examples first (aggregate_columns)."
        )
    if not torch.isfinite(scores).all():
        raise TracInWEError("`scores` holds NaN or infinite values.")
    if not noisy.any() or noisy.all():
        raise TracInWEError("`noisy` must mark some, but not all, examples.")
    order = torch.argsort(scores, stable=True)
    return noisy[order].double().cumsum(0) / noisy.sum()


def noise_detection_rate(
    scores: Tensor, noisy: Tensor, fractions: Sequence[float] = (0.3,)
) -> Dict[str, float]:
    r"""
    NDR at chosen shares of the training set, and AUC-NDR.

    Args:
        scores (Tensor): ``(n_train,)``, lower = more harmful (see
                    :func:`noise_detection_curve`).
        noisy (Tensor): ``(n_train,)`` bool.
        fractions (sequence of float, optional): Shares ``p`` in (0, 1).
                    Default: (0.3,), the study's NDR@30.

    Returns:
        metrics (dict): ``"NDR@30"`` (one key per fraction, in percent) and
        ``"AUC-NDR"``.
    """
    curve = noise_detection_curve(scores, noisy)
    n, n_noisy = curve.numel(), int(noisy.sum())
    metrics = {}
    for fraction in fractions:
        if not 0 < fraction < 1:
            raise TracInWEError(f"Each fraction must be in (0, 1); got {fraction}.")
        metrics[f"NDR@{round(100 * fraction)}"] = float(curve[int(fraction * n)])
    metrics["AUC-NDR"] = float(curve.sum() / (n - n_noisy / 2))
    return metrics
