#!/usr/bin/env python3

r"""
Cheap fingerprints of training data, taken as batches pass: each example is
recorded as its token ids at real (non-padding) positions and its label, so a
fingerprint depends on the examples and their order, never on the batch size
or the padding.
"""

import hashlib
from typing import List, Optional, Sequence

import numpy as np
import torch
from torch import Tensor


class ExampleDigests:
    r"""
    SHA-256 digests of consecutive ranges of examples.

    Args:
        ends (sequence of int, optional): Increasing example counts at which a
                    range ends (for an index: the end of each shard). Examples
                    past the last end go into one more range. Default: None
                    (one digest over all examples)
    """

    def __init__(self, ends: Optional[Sequence[int]] = None) -> None:
        self._ends = list(ends or [])
        self._done: List[str] = []
        self._current = hashlib.sha256()
        self.num_examples = 0

    def update(self, token_ids: Tensor, real: Tensor, labels: Tensor) -> None:
        r"""
        Adds one batch of examples, in order.

        Args:
            token_ids (Tensor): ``(B, L)`` token ids as the model embeds them.
            real (Tensor): ``(B, L)`` bool, True at non-padding positions.
            labels (Tensor): ``(B, ...)`` labels.
        """
        records, starts = _records(token_ids, real, labels)
        count = token_ids.shape[0]
        first = 0
        while self._ends and self._ends[0] < self.num_examples + count:
            cut = self._ends.pop(0) - self.num_examples
            self._current.update(records[starts[first] : starts[cut]].tobytes())
            self._close()
            first = cut
        self._current.update(records[starts[first] :].tobytes())
        self.num_examples += count

    def digests(self) -> List[str]:
        r"""The digests of the finished ranges and of the open one, if any."""
        finished = list(self._done)
        while self._ends and self._ends[0] <= self.num_examples:
            self._ends.pop(0)
            self._close()
            finished = list(self._done)
        return finished + [self._current.copy().hexdigest()]

    def _close(self) -> None:
        self._done.append(self._current.hexdigest())
        self._current = hashlib.sha256()


def _records(token_ids: Tensor, real: Tensor, labels: Tensor) -> "tuple":
    r"""
    One int64 record per example, ``[number of real ids, ids..., labels...]``,
    concatenated, with each record's start (and the total length last).
    """
    ids, real = token_ids.detach().cpu().long(), real.detach().cpu().bool()
    batch = ids.shape[0]
    label_values = _label_words(labels.detach().cpu().reshape(batch, -1))
    lengths = real.sum(1)
    sizes = 1 + lengths + label_values.shape[1]
    starts = torch.zeros(batch + 1, dtype=torch.long)
    starts[1:] = sizes.cumsum(0)
    flat = torch.empty(int(starts[-1]), dtype=torch.long)
    flat[starts[:-1]] = lengths
    rows, cols = real.nonzero(as_tuple=True)
    rank = (real.cumsum(1) - 1)[rows, cols]
    flat[starts[rows] + 1 + rank] = ids[rows, cols]
    label_slots = (starts[:-1] + 1 + lengths).unsqueeze(1) + torch.arange(
        label_values.shape[1]
    )
    flat[label_slots] = label_values
    return np.ascontiguousarray(flat.numpy()), starts.tolist()


def _label_words(labels: Tensor) -> Tensor:
    if labels.is_floating_point():
        return labels.double().view(torch.int64)
    return labels.long()
