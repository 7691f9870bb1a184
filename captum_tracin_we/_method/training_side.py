#!/usr/bin/env python3

r"""
The training side of TracIn-WE at one loaded checkpoint: either streamed (the
training set goes through the model again, its word rows scored as they come)
or read from an attached index (its stored word rows). Both give the same
numbers; :class:`~captum_tracin_we.TracInWE` picks one per call. Also the
checkpoint sums of ``influence`` and ``self_influence`` over either side.
"""

from typing import Any, List, Optional

import torch
from torch import Tensor

from captum_tracin_we._checkpoints.checkpoint_pass import LoadedCheckpoint
from captum_tracin_we._data.same_passes import SamePasses
from captum_tracin_we._data.training_data import TrainingData
from captum_tracin_we._gradients.gradient_source import WordGradientSource
from captum_tracin_we._gradients.word_rows import WordRows
from captum_tracin_we._index.index_scoring import (
    indexed_scores_each,
    indexed_self_scores,
)
from captum_tracin_we._method.progress import progress_bar
from captum_tracin_we._scoring.normalization import (
    inverse_norms,
    per_example_scaled,
    self_score_factor,
)
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
        normalize (str, optional): ``"cosine"`` or ``"train"``: each training
                    example's scores divided by its gradient norm at the
                    checkpoint. Default: None
    """

    def __init__(
        self,
        source: WordGradientSource,
        training: TrainingData,
        loss_fn: Any,
        passes: SamePasses,
        normalize: Optional[str] = None,
    ) -> None:
        self.source = source
        self.training = training
        self.loss_fn = loss_fn
        self.passes = passes
        self.normalize = normalize

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
        return self.scores_each([queries], loaded, bar)[0]

    def scores_each(
        self, queries: List[WordRows], loaded: LoadedCheckpoint, bar: Any
    ) -> List[List[Tensor]]:
        r"""
        The blocks of :meth:`scores` for several sets of query rows from one
        pass over the training set: each set scored against each training
        batch's rows exactly as it is scored alone.

        Returns:
            blocks (list of list of Tensor): Per set, its blocks in order.
        """
        digests = self.passes.start()
        rows = self.source.stream(
            self.training.batches(), self.loss_fn, "training", bar, digests
        )
        blocks: List[List[Tensor]] = [[] for _ in queries]
        for train in rows:
            for found, rows_of_set in zip(blocks, queries):
                found.append(self._scores(rows_of_set, train))
        self.passes.finish(digests)
        return blocks

    def _self_scores(self, rows: WordRows, weights: Optional[Tensor]) -> Tensor:
        if self.normalize is None:
            return self_scores(rows, weights)
        factor = self_score_factor(self_scores(rows), self.normalize)
        return self_scores(rows, weights) * factor

    def _scores(self, queries: WordRows, train: WordRows) -> Tensor:
        block = shared_token_scores(queries, train)
        if self.normalize is None:
            return block
        return block * inverse_norms(self_scores(train)).to(block).unsqueeze(0)

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
        part = torch.cat([self._self_scores(r, weights) for r in rows])
        self.passes.finish(digests)
        return loaded.learning_rate * part


class IndexedTraining:
    r"""
    The training side read from an attached index: the stored word rows of
    each checkpoint, checked against the loaded checkpoint first.

    Args:
        index (WordIndex): The attached index.
        normalize (str, optional): As for :class:`StreamedTraining`, with the
                    norms the index stores. Default: None
    """

    def __init__(self, index: Any, normalize: Optional[str] = None) -> None:
        self.index = index
        self.normalize = normalize

    def scores(
        self, queries: WordRows, loaded: LoadedCheckpoint, bar: Any
    ) -> List[Tensor]:
        r"""The scores as one ``(n_queries, n_train)`` block."""
        return self.scores_each([queries], loaded, bar)[0]

    def scores_each(
        self, queries: List[WordRows], loaded: LoadedCheckpoint, bar: Any
    ) -> List[List[Tensor]]:
        r"""The block of :meth:`scores` for each of several sets of query rows,
        each scored as alone, the checkpoint checked and each unit opened once."""
        self.index.check_checkpoint(loaded)
        blocks = indexed_scores_each(self.index, loaded.position, queries)
        if self.normalize is None:
            return [[block] for block in blocks]
        squared = indexed_self_scores(self.index, loaded.position, 1.0)
        factor = inverse_norms(squared)
        return [[block * factor.to(block).unsqueeze(0)] for block in blocks]

    def self_scores(
        self,
        batches: Any,
        loaded: LoadedCheckpoint,
        weights: Optional[Tensor],
        bar: Any,
    ) -> Tensor:
        r"""The stored self-influence of the training set (no IDF weights)."""
        self.index.check_checkpoint(loaded)
        squared = indexed_self_scores(self.index, loaded.position, 1.0)
        factor = self_score_factor(squared, self.normalize)
        return loaded.learning_rate * squared * factor


def training_side(
    index: Any,
    source: WordGradientSource,
    training: TrainingData,
    loss_fn: Any,
    passes: SamePasses,
    normalize: Optional[str] = None,
) -> Any:
    r"""The attached ``index`` when there is one, else the training set streamed."""
    if index is not None:
        return IndexedTraining(index, normalize)
    return StreamedTraining(source, training, loss_fn, passes, normalize)


def test_rows(
    source: WordGradientSource,
    batches: Any,
    loss_fn: Any,
    loaded: LoadedCheckpoint,
    bar: Any,
    passes: SamePasses,
    aggregate: bool = False,
    weights: Optional[Tensor] = None,
    unit_norm: bool = False,
) -> WordRows:
    r"""
    The test side at the loaded checkpoint: the word rows of every test
    example (each scaled to unit gradient norm with ``unit_norm``), summed
    into one with ``aggregate``, times the learning rate and, with IDF
    ``weights``, each token's weight.

    Returns:
        queries (WordRows): ``n_test`` rows (1 with ``aggregate``).
    """
    digests = passes.start()
    queries = WordRows.cat(list(source.stream(batches, loss_fn, "test", bar, digests)))
    passes.finish(digests)
    if unit_norm:
        queries = per_example_scaled(queries, inverse_norms(self_scores(queries)))
    if aggregate:
        queries = queries.summed()
    queries = queries.scaled(loaded.learning_rate)
    return queries if weights is None else queries.weighted(weights)


def summed_self_scores(
    tracin: Any,
    batches: Any,
    index: Any,
    passes: SamePasses,
    weights: Optional[Tensor],
    show_progress: bool,
) -> Tensor:
    r"""
    The body of :meth:`TracInWE.self_influence`: ``sum_c lr_c * <g(z), g(z)>``
    over the checkpoints, read from ``index`` when given, else streamed.

    Returns:
        scores (Tensor): ``(n,)`` float32 on CPU.
    """
    source, training = tracin.gradient_source, tracin.training_data
    side = training_side(
        index, source, training, tracin.loss_fn, passes, tracin.normalize
    )
    show = show_progress and index is None
    total: Optional[Tensor] = None
    with progress_bar(tracin, "self influence", batches, show, False) as bar:
        for loaded in tracin.checkpoint_pass():
            part = side.self_scores(batches, loaded, weights, bar)
            total = part if total is None else total + part
    assert total is not None
    return total.float().cpu()


def add_blocks(totals: List[Tensor], blocks: List[Tensor]) -> None:
    r"""Adds one checkpoint's score blocks into the running ``totals``."""
    for i, block in enumerate(blocks):
        if i < len(totals):
            totals[i] += block
        else:
            totals.append(block)
