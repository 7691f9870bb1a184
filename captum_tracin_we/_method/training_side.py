#!/usr/bin/env python3

r"""
The training side of TracIn-WE at one loaded checkpoint: either streamed (the
training set goes through the model again, its word rows scored as they come)
or read from an attached index (its stored word rows). Both give the same
numbers; :class:`~captum_tracin_we.TracInWE` picks one per call.
"""

from typing import Any, List, Optional

import torch
from torch import Tensor

from captum_tracin_we._checkpoints.checkpoint_pass import LoadedCheckpoint
from captum_tracin_we._data.same_passes import SamePasses
from captum_tracin_we._data.training_data import TrainingData
from captum_tracin_we._gradients.gradient_source import WordGradientSource
from captum_tracin_we._gradients.word_rows import WordRows
from captum_tracin_we._index.index_scoring import indexed_scores, indexed_self_scores
from captum_tracin_we._scoring.shared_tokens import self_scores, shared_token_scores


class StreamedTraining:
    r"""
    The training side recomputed at every checkpoint: one pass over the
    training data per checkpoint, checked to see the same data every time.

    Args:
        source (WordGradientSource): Collects the word rows.
        training (TrainingData): The training batches, in order.
        loss_fn (Callable): The training loss.
        passes (SamePasses): The check that every pass saw the same data.
    """

    def __init__(
        self,
        source: WordGradientSource,
        training: TrainingData,
        loss_fn: Any,
        passes: SamePasses,
    ) -> None:
        self.source = source
        self.training = training
        self.loss_fn = loss_fn
        self.passes = passes

    def scores(
        self, queries: WordRows, loaded: LoadedCheckpoint, bar: Any
    ) -> List[Tensor]:
        r"""
        Scores of ``queries`` against every training example at the loaded
        checkpoint.

        Returns:
            blocks (list of Tensor): ``(n_queries, batch)`` per training batch,
                        in order.
        """
        digests = self.passes.start()
        rows = self.source.stream(
            self.training.batches(), self.loss_fn, "training", bar, digests
        )
        blocks = [shared_token_scores(queries, train) for train in rows]
        self.passes.finish(digests)
        return blocks

    def self_scores(
        self,
        batches: Any,
        loaded: LoadedCheckpoint,
        weights: Optional[Tensor],
        bar: Any,
    ) -> Tensor:
        r"""
        ``lr * <g(z), g(z)>`` of every example of ``batches`` at the loaded
        checkpoint.

        Returns:
            scores (Tensor): ``(n,)``.
        """
        digests = self.passes.start()
        rows = self.source.stream(batches, self.loss_fn, "training", bar, digests)
        part = torch.cat([self_scores(r, weights) for r in rows])
        self.passes.finish(digests)
        return loaded.learning_rate * part


class IndexedTraining:
    r"""
    The training side read from an attached index: the stored word rows of
    each checkpoint, checked against the loaded checkpoint first.

    Args:
        index (WordIndex): The attached index.
    """

    def __init__(self, index: Any) -> None:
        self.index = index

    def scores(
        self, queries: WordRows, loaded: LoadedCheckpoint, bar: Any
    ) -> List[Tensor]:
        r"""The scores as one ``(n_queries, n_train)`` block."""
        self.index.check_checkpoint(loaded)
        return [indexed_scores(self.index, loaded.position, queries)]

    def self_scores(
        self,
        batches: Any,
        loaded: LoadedCheckpoint,
        weights: Optional[Tensor],
        bar: Any,
    ) -> Tensor:
        r"""The stored self-influence of the training set (no IDF weights)."""
        self.index.check_checkpoint(loaded)
        return indexed_self_scores(self.index, loaded.position, loaded.learning_rate)


def add_blocks(totals: List[Tensor], blocks: List[Tensor]) -> None:
    r"""Adds one checkpoint's score blocks into the running ``totals``."""
    for i, block in enumerate(blocks):
        if i < len(totals):
            totals[i] += block
        else:
            totals.append(block)
