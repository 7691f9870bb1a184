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

    def update(
        self,
        token_ids: Tensor,
        real: Tensor,
        labels: Tensor,
        inputs: Sequence[Tensor] = (),
    ) -> None:
        r"""
        Adds one batch of examples, in order.

        Args:
            token_ids (Tensor): ``(B, L)`` token ids as the model embeds them.
            real (Tensor): ``(B, L)`` bool, True at non-padding positions.
            labels (Tensor): ``(B, ...)`` labels.
            inputs (sequence of Tensor, optional): Other per-example model
                        inputs, ``(B, ...)``; those shaped ``(B, L)`` are read at
                        real positions only. Default: ()
        """
        records, starts = _records(token_ids, real, labels, inputs)
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


def _records(
    token_ids: Tensor, real: Tensor, labels: Tensor, inputs: Sequence[Tensor]
) -> "tuple":
    r"""
    One int64 record per example, ``[number of real ids, ids..., labels...,
    other inputs...]``, concatenated, with each record's start (and the total
    length last).
    """
    ids, real = token_ids.detach().cpu().long(), real.detach().cpu().bool()
    batch = ids.shape[0]
    lengths = real.sum(1)
    segments = [(lengths, torch.ones(batch, dtype=torch.long)), (ids[real], lengths)]
    segments.append(_rows(labels, batch))
    for tensor in inputs:
        tensor = tensor.detach().cpu()
        if tensor.shape[:2] == real.shape:
            segments.append(
                (_words(tensor[real]).reshape(-1), _per_row(tensor, lengths))
            )
        else:
            segments.append(_rows(tensor, batch))
    sizes = sum(counts for _, counts in segments)
    starts = torch.zeros(batch + 1, dtype=torch.long)
    starts[1:] = sizes.cumsum(0)
    flat = torch.empty(int(starts[-1]), dtype=torch.long)
    cursor = starts[:-1].clone()
    rows = torch.arange(batch)
    for words, counts in segments:
        owner = rows.repeat_interleave(counts)
        within = torch.arange(words.numel()) - (counts.cumsum(0) - counts)[owner]
        flat[cursor[owner] + within] = words
        cursor += counts
    return np.ascontiguousarray(flat.numpy()), starts.tolist()


def _rows(tensor: Tensor, batch: int) -> "tuple":
    words = _words(tensor.detach().cpu().reshape(batch, -1))
    return words.reshape(-1), torch.full((batch,), words.shape[1], dtype=torch.long)


def _per_row(tensor: Tensor, lengths: Tensor) -> Tensor:
    width = 1
    for size in tensor.shape[2:]:
        width *= int(size)
    return lengths * width


def _words(values: Tensor) -> Tensor:
    r"""Values as int64 words: integers as they are, floats by their bits."""
    if values.is_floating_point():
        return values.double().view(torch.int64)
    if values.is_complex():
        return torch.view_as_real(values).double().view(torch.int64).flatten(-2)
    return values.long()
