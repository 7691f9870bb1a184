#!/usr/bin/env python3

r"""
Word gradients of batches, as every TracIn-WE computation reads them: one
forward and one backward pass per batch, the counted positions chosen
(padding, excluded ids, Top-k), and the data fingerprinted as it passes.
"""

from typing import Any, Callable, Iterable, Iterator, List, Optional, Tuple

import torch
from torch import Tensor

from captum_tracin_we._data.data_fingerprint import ExampleDigests
from captum_tracin_we._data.model_adapter import ModelAdapter
from captum_tracin_we._errors import BatchError, TracInWEError
from captum_tracin_we._gradients.word_gradients import (
    LayoutMemory,
    WordGradients,
    collect_word_gradients,
    embedded_token_ids,
    stack_word_gradients,
)
from captum_tracin_we._gradients.word_rows import WordRows, word_rows

LossFn = Callable[..., Tensor]


class WordGradientSource:
    r"""
    Computes word gradients of batches for one model and one set of counting
    rules.

    Args:
        adapter (ModelAdapter): The model, its embedding table and batch format.
        top_k_words (int, optional): Top-k positions per example, or None.
        exclude_token_ids (Tensor): ``(E,)`` long ids that never count.
    """

    def __init__(
        self,
        adapter: ModelAdapter,
        top_k_words: Optional[int],
        exclude_token_ids: Tensor,
    ) -> None:
        self.adapter = adapter
        self.top_k_words = top_k_words
        self.exclude_token_ids = exclude_token_ids
        padding_idx = adapter.embedding.padding_idx
        self.layout_memory = LayoutMemory(padding_idx)

    def gradients(
        self, batch: Any, loss_fn: LossFn, first: int, role: str
    ) -> WordGradients:
        r"""The position gradients of one batch (see ``collect_word_gradients``)."""
        with _in_role(role):
            return collect_word_gradients(
                self.adapter,
                batch,
                loss_fn,
                first_index=first,
                top_k_words=self.top_k_words,
                exclude_token_ids=self.exclude_token_ids,
                layout_memory=self.layout_memory,
            )

    def rows(
        self,
        batch: Any,
        loss_fn: LossFn,
        first: int,
        role: str,
        digests: Optional[ExampleDigests] = None,
    ) -> WordRows:
        r"""The word rows of one batch; with ``digests``, the batch is recorded."""
        gradients = self.gradients(batch, loss_fn, first, role)
        if digests is not None:
            digests.update(
                gradients.token_ids, gradients.real, gradients.labels, gradients.inputs
            )
        return word_rows(gradients)

    def stream(
        self,
        batches: Iterable[Any],
        loss_fn: LossFn,
        role: str,
        bar: Any,
        digests: Optional[ExampleDigests] = None,
    ) -> Iterator[WordRows]:
        r"""Word rows batch by batch, with example indices local to each batch."""
        first = 0
        for batch in batches:
            rows = self.rows(batch, loss_fn, first, role, digests)
            first += rows.num_examples
            bar.update(1)
            yield rows
        if first == 0:
            raise BatchError(
                f"The {role} data is empty; pass at least one example. (An iterable "
                "that can be read only once gives no examples the second time; "
                "TracIn-WE reads the data once per checkpoint.)"
            )

    def stacked(
        self,
        batches: Iterable[Any],
        loss_fn: LossFn,
        role: str,
        bar: Any,
        pad_id: int,
        digests: Optional[ExampleDigests] = None,
    ) -> WordGradients:
        r"""The position gradients of all batches, right-padded to one width."""
        parts, first = [], 0
        for batch in batches:
            parts.append(self.gradients(batch, loss_fn, first, role))
            part = parts[-1]
            if digests is not None:
                digests.update(part.token_ids, part.real, part.labels, part.inputs)
            first += part.num_examples
            bar.update(1)
        if first == 0:
            raise BatchError(
                f"The {role} data is empty; pass at least one example. (An iterable "
                "that can be read only once gives no examples the second time; "
                "TracIn-WE reads the data once per checkpoint.)"
            )
        return stack_word_gradients(parts, pad_id)

    def learn_layout(self, training_batches: Iterable[Any]) -> None:
        r"""
        Reads the token-id layout (batch- or sequence-first) from the first
        training batch, up to the embedding, before anything else is read, so
        that a square test batch (as many texts as positions, where the shape
        cannot tell) is read as the training data are, at every checkpoint.
        """
        if self.layout_memory.convention is not None:
            return
        first = next(iter(training_batches), None)
        if first is not None:
            self.token_ids(first, "training")

    def token_ids(
        self, batch: Any, role: str
    ) -> Tuple[Tensor, Tensor, Tensor, List[Tensor]]:
        r"""Token ids, real positions, labels and other inputs of a batch, without
        running the model past its embedding."""
        with _in_role(role):
            return embedded_token_ids(self.adapter, batch, self.layout_memory)


class _in_role:
    r"""Prefixes TracIn-WE errors with the data they came from."""

    def __init__(self, role: str) -> None:
        self.role = role

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, error: Any, traceback: Any) -> bool:
        if isinstance(error, TracInWEError) and not str(error).startswith("In the "):
            raise type(error)(f"In the {self.role} data: {error}") from None
        return False


def record_data(
    source: WordGradientSource,
    batches: Iterable[Any],
    digests: ExampleDigests,
    role: str = "training",
) -> ExampleDigests:
    r"""Fingerprints batches without running the model past its embedding."""
    with torch.no_grad():
        for batch in batches:
            digests.update(*source.token_ids(batch, role))
    return digests
