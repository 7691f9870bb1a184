#!/usr/bin/env python3

r"""
The one top-k rule of every influence method here: ``k=None`` gives all
scores, an int gives the ``k`` most influential training examples of one sign.
"""

from typing import Optional, Tuple, Union

from captum.influence._utils.common import KMostInfluentialResults
from torch import Tensor

from captum_tracin_we._errors import check_k


def top_k(
    scores: Tensor, k: Optional[int], proponents: bool = True
) -> Union[Tensor, KMostInfluentialResults]:
    r"""
    The scores as they are, or their top ``k`` per row.

    Args:
        scores (Tensor): ``(n_test, n_train)`` influence scores; positive means
                    proponent (training on it lowers the test loss).
        k (int, optional): Training examples kept per test example, in
                    ``[1, n_train]``; None keeps all. Default: None
        proponents (bool, optional): The largest scores (proponents) if True,
                    the smallest (opponents) if False. Default: True

    Returns:
        scores (Tensor): ``scores`` itself when ``k`` is None.
        results (KMostInfluentialResults): Else ``(indices, influence_scores)``,
                    both ``(n_test, k)``, most influential first; ``indices`` is
                    a long tensor.

    Raises:
        ValueError: If ``k`` is not an int in ``[1, n_train]``.
    """
    if k is None:
        return scores
    check_k(k, scores.shape[-1])
    values, indices = scores.topk(k, dim=-1, largest=proponents)
    return KMostInfluentialResults(indices.long(), values)


def both_sides(
    scores: Tensor, k: int
) -> Tuple[KMostInfluentialResults, KMostInfluentialResults]:
    r"""
    The top ``k`` proponents and the top ``k`` opponents of ``scores``
    (``(n_test, n_train)``), as :func:`top_k` gives them.

    Returns:
        (proponents, opponents): Each ``(n_test, k)`` indices and scores.
    """
    return top_k(scores, k, True), top_k(scores, k, False)  # type: ignore[return-value]
