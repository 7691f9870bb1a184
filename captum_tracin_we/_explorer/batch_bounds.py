#!/usr/bin/env python3

r"""
The bounds of the explorer's query batches (:mod:`~captum_tracin_we.
_explorer.query_batching`): how many waiting queries run together, and how
long a batch under load waits for more; and how much checkpoint memory it
keeps. Checked the same way for
``Explorer(max_batch=..., max_wait=...)`` and for ``captum-tracin-we explore
--max-batch --max-wait``. Plain Python, so the command line checks them
before anything heavy is imported.
"""

import math
from typing import Any

# Batched answers are bitwise the ones alone, but each text still runs its own
# forward and backward, so a batch answers no faster than its queries one by
# one: on the 8-client benchmark batching raised p95 (2.63 -> 3.13 s,
# benchmarks/results/issue24_explorer_identical.txt; with checkpoints kept in
# memory 1.32 -> 1.71 s, issue24_explorer_resident.txt). Off by default.
DEFAULT_MAX_BATCH = 1
DEFAULT_MAX_WAIT = 0.03
MAX_BATCH_LIMIT = 4096
MAX_WAIT_LIMIT = 10.0
# Checkpoints kept in memory by a running explorer (ResidentCheckpoints): on
# MiniLM, reading and copying the checkpoints was about a quarter of a query.
DEFAULT_KEEP_CHECKPOINTS_GIB = 4.0


def checked_max_batch(value: Any) -> int:
    r"""
    The most queries answered together.

    Args:
        value (int): In ``[1, 4096]``; 1 answers each query alone.

    Returns:
        max_batch (int): ``value``.

    Raises:
        ValueError: If ``value`` is not an integer in that range.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"`max_batch` must be an integer; got {value!r}.")
    if not 1 <= value <= MAX_BATCH_LIMIT:
        raise ValueError(
            f"`max_batch` must lie in [1, {MAX_BATCH_LIMIT}] queries; got {value}."
        )
    return value


def checked_max_wait(value: Any) -> float:
    r"""
    The most seconds a batch under load waits for more queries.

    Args:
        value (float): Finite, in ``[0, 10]``; 0 never waits.

    Returns:
        max_wait (float): ``value`` as a float.

    Raises:
        ValueError: If ``value`` is not a finite number in that range.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"`max_wait` must be a number of seconds; got {value!r}.")
    if not math.isfinite(value) or not 0 <= value <= MAX_WAIT_LIMIT:
        raise ValueError(
            f"`max_wait` must lie in [0, {MAX_WAIT_LIMIT:g}] seconds; got {value}."
        )
    return float(value)


def checked_keep_checkpoints_gib(value: Any) -> float:
    r"""
    The most GiB of checkpoint weights a running explorer keeps in memory.

    Args:
        value (float): Finite and >= 0; 0 keeps none (every query reads its
                    checkpoints from disk).

    Returns:
        gib (float): ``value`` as a float.

    Raises:
        ValueError: If ``value`` is not a finite number >= 0.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(
            f"`keep_checkpoints_gib` must be a number of GiB; got {value!r}."
        )
    if not math.isfinite(value) or value < 0:
        raise ValueError(
            f"`keep_checkpoints_gib` must be a finite number >= 0; got {value}."
        )
    return float(value)
