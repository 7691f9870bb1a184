#!/usr/bin/env python3

r"""
Which tokens count and how much: the excluded token ids, checked, and position
gradients weighted by the weight of the token each position holds.
"""

from typing import Any, Iterable, List, Optional

import torch
from torch import Tensor


def weighted_positions(gradients: Any, weights: Optional[Tensor]) -> Tensor:
    r"""Position gradients times the weight of the token each position holds."""
    if weights is None:
        return gradients.gradients
    factor = weights.to(gradients.gradients.device)[gradients.token_ids]
    return gradients.gradients * factor.unsqueeze(-1)


def checked_top_k_words(k: Any) -> Optional[int]:
    r"""Validates ``top_k_words``: None or a positive int."""
    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
        raise ValueError(f"`top_k_words` must be a positive int; got {k}.")
    return k


def checked_token_ids(ids: Optional[Iterable[Any]]) -> List[int]:
    r"""Validates ``exclude_token_ids``: an iterable of integer ids >= 0."""
    if ids is None:
        return []
    if isinstance(ids, (str, bytes)) or not isinstance(ids, Iterable):
        raise ValueError(
            "`exclude_token_ids` must be an iterable of token ids, for example "
            f"tokenizer.all_special_ids or [0, 101]; got {ids!r}."
        )
    values = torch.as_tensor(list(ids)).flatten()
    if values.numel() and (
        values.is_floating_point() or values.dtype == torch.bool or values.min() < 0
    ):
        raise ValueError(
            "`exclude_token_ids` must hold integer token ids >= 0; got "
            f"{values.tolist()[:10]}."
        )
    return [int(v) for v in values.tolist()]
