#!/usr/bin/env python3

r"""
Scoring against a word-gradient index: pure functions of the stored arrays
and the query rows, on one process or summed over ``torch.distributed`` ranks.
"""

import warnings
from typing import List, Tuple

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor

from captum_tracin_we._errors import IndexCorruptedError
from captum_tracin_we._index.index_store import UnitArrays
from captum_tracin_we._index.word_index import WordIndex
from captum_tracin_we._scoring.shared_tokens import QueryGroups, WordRows


def rank_and_world() -> Tuple[int, int]:
    r"""This process's rank and the world size (0 and 1 without distributed)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def projection(dim: int, stored_dim: int, seed: int) -> Tensor:
    r"""
    A seeded Johnson-Lindenstrauss matrix ``(dim, stored_dim)`` with i.i.d.
    N(0, 1/stored_dim) entries: ``E[P P^T] = I``, so projected dot products are
    unbiased estimates of the exact ones.
    """
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(dim, stored_dim, generator=generator) / stored_dim**0.5


def stored_queries(index: WordIndex, queries: WordRows) -> WordRows:
    r"""Query rows on the CPU, projected as the index stores its rows."""
    settings = index.settings
    queries = queries.to("cpu")
    if settings.projection_seed is None:
        return queries
    matrix = projection(settings.dim, settings.stored_dim, settings.projection_seed)
    return WordRows(
        queries.example_index,
        queries.token_ids,
        queries.vectors @ matrix,
        queries.num_examples,
    )


def indexed_scores(index: WordIndex, checkpoint: int, queries: WordRows) -> Tensor:
    r"""
    ``(n_query, n_train)`` scores of query rows (already scaled by the learning
    rate) against every shard of the index at one checkpoint.
    """
    return indexed_scores_each(index, checkpoint, [queries])[0]


def indexed_scores_each(
    index: WordIndex, checkpoint: int, queries: List[WordRows]
) -> List[Tensor]:
    r"""
    The scores of several sets of query rows at one checkpoint, each set
    scored exactly as :func:`indexed_scores` scores it alone (its own token
    groups and products, in the same order), each shard's unit opened once
    for all of them.

    Args:
        index (WordIndex): The index.
        checkpoint (int): The checkpoint's position.
        queries (list of WordRows): The sets, each scaled by the learning rate.

    Returns:
        scores (list of Tensor): ``(n_query, n_train)`` per set, in order.
    """
    rank, world = rank_and_world()
    groups = [QueryGroups(stored_queries(index, rows)) for rows in queries]
    scores = [torch.zeros(rows.num_examples, index.num_examples) for rows in queries]
    for record in index.shards:
        if world > 1 and record.shard % world != rank:
            continue
        unit = index.unit(record, checkpoint)
        span = slice(record.first, record.first + record.count)
        for found, grouped in zip(scores, groups):
            found[:, span] = unit_scores(unit, grouped)
    return [all_reduce(found) if world > 1 else found for found in scores]


def unit_scores(unit: UnitArrays, groups: QueryGroups) -> Tensor:
    r"""
    ``(n_query, count)`` scores of grouped queries against one unit, reading one
    token's contiguous rows at a time from the memory map (a view, no copy,
    for float32 rows), so memory stays bounded by the largest token's rows,
    not the shard. The unit's own block of scores is small enough to stay in
    the CPU's cache while its tokens are added (adding into the whole
    ``(n_query, n_train)`` matrix was slower).

    Raises:
        IndexCorruptedError: If stored rows name examples outside the shard.
    """
    scores = torch.zeros(groups.num_examples, unit.count)
    examples = _mapped_rows(unit.examples)  # ids in the whole training set
    if len(examples) and (
        int(examples.min()) < unit.first
        or int(examples.max()) >= unit.first + unit.count
    ):
        raise IndexCorruptedError(
            "An index unit stores rows of examples outside its shard; the index "
            "is damaged. Rebuild it with TracInWE.build_index(path)."
        )
    vectors = _mapped_rows(unit.vectors) if unit.vectors.dtype == np.float32 else None
    tokens = np.asarray(groups.tokens, dtype=np.int64)
    known = tokens < unit.offsets.shape[0] - 1
    starts = np.zeros(len(tokens), dtype=np.int64)
    stops = np.zeros(len(tokens), dtype=np.int64)
    starts[known] = unit.offsets[tokens[known]]
    stops[known] = unit.offsets[tokens[known] + 1]
    for group, (start, stop) in enumerate(zip(starts.tolist(), stops.tolist())):
        if stop <= start:
            continue
        if vectors is not None:
            rows = vectors[start:stop]
        else:  # float16, widened one token's rows at a time
            rows = _mapped_rows(unit.vectors[start:stop])
        groups.add_token_scores(scores, group, rows, examples[start:stop] - unit.first)
    return scores


def _mapped_rows(array: np.ndarray) -> Tensor:
    r"""
    A tensor over a memory map (or part of one), read where it lies (no copy)
    when it is float32 or int64; float16 rows are widened to float32. The
    index's files are opened read-only and the tensor is only read, so torch's
    warning about non-writable arrays does not apply.
    """
    if array.dtype == np.float16:
        return torch.from_numpy(array.astype(np.float32))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*not writable")
        return torch.from_numpy(array)


def indexed_self_scores(index: WordIndex, checkpoint: int, rate: float) -> Tensor:
    r"""``(n_train,)`` float64 self-influence at one checkpoint, times ``rate``."""
    total = torch.zeros(index.num_examples, dtype=torch.float64)
    for record in index.shards:
        unit = index.unit(record, checkpoint)
        stored = torch.from_numpy(np.array(unit.self_norms))
        total[record.first : record.first + record.count] = rate * stored
    return total


def all_reduce(tensor: Tensor) -> Tensor:
    r"""Sums a CPU tensor over ranks (through the GPU when the backend is NCCL)."""
    if dist.get_backend() == "nccl":
        on_device = tensor.cuda()
        dist.all_reduce(on_device)
        return on_device.cpu()
    dist.all_reduce(tensor)
    return tensor


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
