#!/usr/bin/env python3

r"""
IDF weights of tokens for TracIn-WE: each shared token's term
``<row_w(x), row_w(x')>`` is multiplied by ``idf(w) ** a``, with the document
frequency counted over the training texts' counted positions (padding,
masked positions and excluded ids do not count; Top-k does not change it).
"""

import math
from typing import Any, Iterable, Optional

import torch
from torch import Tensor

from captum_tracin_we._utils.model_adapter import ModelAdapter
from captum_tracin_we._utils.word_gradients import LayoutMemory, embedded_token_ids


def checked_idf_power(idf_power: Any) -> Optional[float]:
    r"""Validates ``idf_power``: None, or a finite number >= 0."""
    if idf_power is None:
        return None
    if isinstance(idf_power, bool) or not isinstance(idf_power, (int, float)):
        raise TypeError(
            "`idf_power` must be a number such as 1.0 (or None for the paper's "
            f"unweighted TracIn-WE); got {type(idf_power).__name__}."
        )
    if not math.isfinite(idf_power) or idf_power < 0:
        raise ValueError(
            f"`idf_power` must be a finite number >= 0; got {idf_power}. Use 1.0 "
            "for IDF weighting, or None for the paper's TracIn-WE."
        )
    return float(idf_power)


def document_frequency(
    adapter: ModelAdapter,
    batches: Iterable[Any],
    exclude_token_ids: Tensor,
    layout_memory: Optional[LayoutMemory] = None,
) -> "tuple[Tensor, int]":
    r"""
    How many training texts hold each token at a counted position.

    The model runs only up to its embedding layer (no gradients).

    Returns:
        (df, num_texts): ``df`` is ``(vocab_size,)`` long, indexed by token id;
        ``num_texts`` counts every example, including ones with no counted
        position.
    """
    vocab_size = adapter.embedding.num_embeddings
    df = torch.zeros(vocab_size, dtype=torch.long)
    num_texts = 0
    excluded = exclude_token_ids.cpu()
    for batch in batches:
        token_ids, real, _, _ = embedded_token_ids(adapter, batch, layout_memory)
        token_ids, real = token_ids.cpu(), real.cpu()
        real &= ~torch.isin(token_ids, excluded)
        examples, positions = real.nonzero(as_tuple=True)
        pairs = torch.unique(examples * vocab_size + token_ids[examples, positions])
        df += torch.bincount(pairs % vocab_size, minlength=vocab_size)
        num_texts += token_ids.shape[0]
    return df, num_texts


def idf_weights(df: Tensor, num_texts: int, power: float) -> Tensor:
    r"""
    ``idf(w) ** power`` with scikit-learn's smooth IDF,
    ``idf(w) = ln((1 + N) / (1 + df(w))) + 1`` (at least 1, so no token's
    term changes sign or vanishes).

    Returns:
        weights (Tensor): ``(vocab_size,)`` float32.
    """
    idf = torch.log((1.0 + num_texts) / (1.0 + df.double())) + 1.0
    return idf.pow(power).float()
