#!/usr/bin/env python3

r"""
The tokens that occur in the most training texts: candidates for
``TracInWE(exclude_token_ids=...)`` when stop words dominate the scores.
"""

from typing import Iterable, List, Sequence, Union

import torch
from torch import Tensor

TokenIds = Union[Tensor, Iterable[Union[Tensor, Sequence[int]]]]


def frequent_token_ids(
    token_ids: TokenIds, n: int, ignore_ids: Sequence[int] = ()
) -> List[int]:
    r"""
    The ``n`` token ids that occur in the most texts (document frequency: a
    token counts once per text, however often it repeats there).

    TracIn-WE sums over every token two texts share, so a token found in most
    texts (a stop word, punctuation, ``[CLS]``/``[SEP]``) adds a term to almost
    every score. In models whose word gradients do not damp such tokens (small
    models trained from scratch in particular), these terms can dominate the
    ranking; see the "Frequent tokens" section of the method notes. Passing the
    result to ``TracInWE(exclude_token_ids=...)`` gives TracIn-WE without them.
    The plain method keeps every token.

    Args:
        token_ids (Tensor or iterable): The training texts' token ids: a
                    ``(n_texts, length)`` tensor, or an iterable of 1-D tensors
                    or lists (one per text, or 2-D tensors, one per batch).
        n (int): How many ids to return.
        ignore_ids (sequence of int, optional): Ids never returned, for example
                    the padding id. Default: ()

    Returns:
        ids (list of int): Up to ``n`` ids, the most frequent first; ties go to
        the smaller id.
    """
    if n < 1:
        raise ValueError(f"`n` must be a positive number of tokens; got {n}.")
    counts: Tensor = torch.zeros(0, dtype=torch.long)
    texts = 0
    for batch in _as_batches(token_ids):
        if batch.numel() and int(batch.min()) < 0:
            raise ValueError(
                f"Token ids must be non-negative; found {int(batch.min())}."
            )
        ordered = batch.sort(dim=1).values
        first = torch.ones_like(ordered, dtype=torch.bool)
        first[:, 1:] = ordered[:, 1:] != ordered[:, :-1]  # once per text
        found = torch.bincount(ordered[first])
        if found.numel() > counts.numel():
            counts = torch.cat(
                [counts, counts.new_zeros(found.numel() - counts.numel())]
            )
        counts[: found.numel()] += found
        texts += batch.shape[0]
    if texts == 0:
        raise ValueError("No texts given: pass the training texts' token ids.")
    ignored = torch.as_tensor(list(ignore_ids), dtype=torch.long)
    ignored = ignored[(ignored >= 0) & (ignored < counts.numel())]
    counts[ignored] = 0
    order = torch.sort(-counts, stable=True).indices[:n]
    return order[counts[order] > 0].tolist()


def _as_batches(token_ids: TokenIds) -> Iterable[Tensor]:
    if isinstance(token_ids, Tensor):
        yield _as_2d(token_ids)
        return
    for item in token_ids:
        yield _as_2d(torch.as_tensor(item))


def _as_2d(ids: Tensor) -> Tensor:
    if ids.dtype.is_floating_point or ids.dtype == torch.bool:
        raise TypeError(f"Token ids must be integers; got {ids.dtype}.")
    if ids.dim() == 1:
        return ids.long().unsqueeze(0)
    if ids.dim() == 2:
        return ids.long()
    raise ValueError(
        "Token ids must be (n_texts, length) or one text; got shape "
        f"{tuple(ids.shape)}."
    )
