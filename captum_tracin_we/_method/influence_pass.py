#!/usr/bin/env python3

r"""
TracIn-WE influence of several test inputs from one checkpoint pass, each
input scored exactly as :meth:`TracInWE.influence` scores it alone: its own
test batches through the model, its own word rows, its own products with the
training side, summed over the checkpoints in the same order. What is shared
is what does not touch an input's numbers: each checkpoint is loaded once, the
index's units are opened once (or the training set streamed once), and the
layout and token weights are read once. ``influence`` itself is this pass with
one input, so the scores are bitwise the same either way.
"""

from contextlib import nullcontext
from typing import Any, Callable, ContextManager, Dict, List, Optional, Sequence, Union

import torch
from torch import Tensor

from captum_tracin_we._checkpoints.checkpoint_pass import LoadedCheckpoint
from captum_tracin_we._data.same_passes import SamePasses
from captum_tracin_we._gradients.word_rows import WordRows
from captum_tracin_we._method.progress import progress_bar
from captum_tracin_we._method.training_side import add_blocks, test_rows, training_side


class _NoBar:
    r"""A progress bar that shows nothing."""

    def update(self, count: int = 1) -> None:
        del count


class InfluencePass:
    r"""
    The scores of several test inputs, built up one loaded checkpoint at a
    time; the caller runs the checkpoint pass (``tracin.checkpoint_pass()``)
    under the model's lock and calls :meth:`add` with each checkpoint.

    Args:
        tracin (TracInWE): The method.
        batches (list): Per input, its test batches (``tracin._as_batches``).
        passes (SamePasses): The check on the training passes.
        weights (Tensor, optional): IDF token weights, or None.
        aggregate (bool, optional): Sum each input's rows into one.
                    Default: False
        isolate (bool, optional): Keep an input's error as its result (the
                    other inputs go on) instead of raising it. Default: False
    """

    def __init__(
        self,
        tracin: Any,
        batches: Sequence[Any],
        passes: SamePasses,
        weights: Optional[Tensor],
        aggregate: bool = False,
        isolate: bool = False,
    ) -> None:
        self.tracin = tracin
        self.batches = list(batches)
        self.weights = weights
        self.aggregate = aggregate
        self.isolate = isolate
        self.side = training_side(
            tracin.index, tracin.gradient_source, tracin.training_data,
            tracin.loss_fn, passes, tracin.normalize,
        )  # fmt: skip
        tracin.gradient_source.learn_layout(tracin.training_data.batches())
        self._test_passes = [SamePasses(role="test") for _ in self.batches]
        self._totals: List[List[Tensor]] = [[] for _ in self.batches]
        self.errors: Dict[int, Exception] = {}

    def add(
        self,
        loaded: LoadedCheckpoint,
        bar: Any = None,
        watch: Optional[Callable[[int], ContextManager[Any]]] = None,
    ) -> None:
        r"""
        Adds the loaded checkpoint's part to every input's scores (inputs that
        failed are left out).

        Args:
            loaded (LoadedCheckpoint): From ``tracin.checkpoint_pass()``.
            bar (tqdm, optional): Updated per batch. Default: None (none)
            watch (Callable, optional): ``watch(i)`` is entered around input
                        ``i``'s forward and backward passes, to observe them
                        (another method reading the same passes' activations);
                        it must not change them. Default: None
        """
        bar = bar if bar is not None else _NoBar()
        tracin = self.tracin
        unit_norm = tracin.normalize == "cosine"
        live: List[int] = []
        queries: List[WordRows] = []
        for i, batches in enumerate(self.batches):
            if i in self.errors:
                continue
            try:
                with watch(i) if watch is not None else nullcontext():
                    rows = test_rows(
                        tracin.gradient_source,
                        batches,
                        tracin.test_loss_fn,
                        loaded,
                        bar,
                        self._test_passes[i],
                        self.aggregate,
                        self.weights,
                        unit_norm,
                    )  # fmt: skip
                queries.append(rows)
                live.append(i)
            except Exception as error:
                if not self.isolate:
                    raise
                self.errors[i] = error
        if not live:
            return
        try:
            blocks = self.side.scores_each(queries, loaded, bar)
        except Exception as error:
            if not self.isolate:
                raise
            self.errors.update({i: error for i in live})
            return
        for i, found in zip(live, blocks):
            add_blocks(self._totals[i], found)

    def results(self) -> List[Union[Tensor, Exception]]:
        r"""
        Returns:
            scores (list): Per input, its ``(n_test, n_train)`` float32 scores
                        on CPU (one row with ``aggregate``), or its error.
        """
        return [
            self.errors[i] if i in self.errors else torch.cat(t, dim=1).cpu()
            for i, t in enumerate(self._totals)
        ]


def summed_scores(
    tracin: Any,
    batches: Any,
    passes: SamePasses,
    weights: Optional[Tensor],
    aggregate: bool,
    show_progress: bool,
) -> Tensor:
    r"""
    The body of :meth:`TracInWE.influence`: at each checkpoint the test side's
    word rows, scored against the training side (the attached index, else
    streamed), summed over the checkpoints; an :class:`InfluencePass` with
    one input.

    Returns:
        scores (Tensor): ``(n_test, n_train)`` (one row with ``aggregate``),
                    float32 on CPU.
    """
    scores = InfluencePass(tracin, [batches], passes, weights, aggregate)
    streamed = tracin.index is None
    with progress_bar(tracin, "influence", batches, show_progress, streamed) as bar:
        for loaded in tracin.checkpoint_pass():
            scores.add(loaded, bar)
    (found,) = scores.results()
    assert isinstance(found, Tensor)
    return found
