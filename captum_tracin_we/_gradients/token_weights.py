#!/usr/bin/env python3

r"""
IDF weights of tokens for TracIn-WE: each shared token's term
``<row_w(x), row_w(x')>`` is multiplied by ``idf(w) ** a``, with the document
frequency counted over the training texts' counted positions (padding,
masked positions and excluded ids do not count; Top-k does not change it).
"""

import math
import numbers
from typing import Any, Iterable, Optional

import torch
from torch import Tensor
from torch.nn import Module

from captum_tracin_we._checkpoints.checkpoint_pass import scoring_mode
from captum_tracin_we._data.data_fingerprint import ExampleDigests
from captum_tracin_we._errors import BatchError
from captum_tracin_we._gradients.gradient_source import WordGradientSource


def checked_idf_power(idf_power: Any) -> Optional[float]:
    r"""Validates ``idf_power``: None, or a finite real number >= 0 (Python,
    NumPy or a one-element tensor)."""
    if idf_power is None:
        return None
    if isinstance(idf_power, torch.Tensor) and idf_power.numel() == 1:
        idf_power = idf_power.item()
    if isinstance(idf_power, bool) or not isinstance(idf_power, numbers.Real):
        raise TypeError(
            "`idf_power` must be a number such as 1.0 (or None for the paper's "
            f"unweighted TracIn-WE); got {type(idf_power).__name__}."
        )
    if not math.isfinite(idf_power) or idf_power < 0:
        raise ValueError(
            f"`idf_power` must be a finite number >= 0; got {idf_power}. Use 1.0 "
            "for IDF weighting, or None for the paper's TracIn-WE."
        )
    return float(idf_power) + 0.0  # -0.0 becomes 0.0


def document_frequency(
    source: WordGradientSource,
    batches: Iterable[Any],
    digests: Optional[ExampleDigests] = None,
) -> "tuple[Tensor, int]":
    r"""
    How many training texts hold each token at a counted position.

    The model runs only up to its embedding layer (no gradients); with
    ``digests``, the batches are fingerprinted as they pass, so that the caller
    can check them against the gradient passes or an index.

    Returns:
        (df, num_texts): ``df`` is ``(vocab_size,)`` long, indexed by token id;
        ``num_texts`` counts every example, including ones with no counted
        position.

    Raises:
        BatchError: If the batches hold no example.
    """
    vocab_size = source.adapter.embedding.num_embeddings
    df = torch.zeros(vocab_size, dtype=torch.long)
    num_texts = 0
    excluded = source.exclude_token_ids.cpu()
    with torch.no_grad():
        for batch in batches:
            token_ids, real, labels, inputs = source.token_ids(batch, "training")
            if digests is not None:
                digests.update(token_ids, real, labels, inputs)
            token_ids, real = token_ids.cpu(), real.cpu()
            real &= ~torch.isin(token_ids, excluded)
            examples, positions = real.nonzero(as_tuple=True)
            pairs = torch.unique(examples * vocab_size + token_ids[examples, positions])
            df += torch.bincount(pairs % vocab_size, minlength=vocab_size)
            num_texts += token_ids.shape[0]
    if num_texts == 0:
        raise BatchError(
            "The training data gave no examples when its document frequencies "
            "were counted (for `idf_power`). An iterable that can be read only "
            "once is empty the second time: pass a Dataset or a DataLoader over "
            "one."
        )
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
    weights = idf.pow(power).float()
    if not bool(torch.isfinite(weights).all()):
        largest = float(idf.max())
        raise ValueError(
            f"`idf_power={power:g}` overflows: the largest idf of this training set "
            f"is {largest:.3g}, and {largest:.3g}**{power:g} is beyond float32. "
            f"Use a power below {88.0 / math.log(largest):.0f}."
        )
    return weights


def counted_token_weights(
    idf_power: Optional[float],
    source: Any,
    training: Any,
    model: Module,
    index: Any,
    passes: Any,
) -> Optional[Tensor]:
    r"""
    The weight of each token's term, ``idf(w) ** idf_power``, counted from the
    training data in one pass that runs the model only up to its embedding.

    Args:
        idf_power (float, optional): The power; None for no weights.
        source (WordGradientSource): Reads the token ids the embedding sees.
        training (TrainingData): The training side.
        model (Module): The model (put in scoring mode for the pass).
        index (WordIndex, optional): An attached index: the pass is checked
                    against its data digests instead of ``passes``.
        passes (SamePasses): The check that all passes saw the same data.

    Returns:
        weights (Tensor or None): ``(vocab_size,)`` float32 by token id, or None
                    without ``idf_power``.
    """
    if idf_power is None:
        return None
    digests = (
        passes.start() if index is None else ExampleDigests(index.shard_ends()[:-1])
    )
    with scoring_mode(model):
        df, num_texts = document_frequency(source, training.batches(), digests)
    if index is None:
        passes.finish(digests)
    else:
        index.check_data(digests.digests(), digests.num_examples)
    return idf_weights(df, num_texts, idf_power)
