#!/usr/bin/env python3

r"""
The training set as TracIn-WE reads it: a fixed sequence of examples whose
position is the index every score refers to. The DataLoader's sampler must
keep that sequence (no shuffling, subsets, reordering or dropped examples);
examples are counted as examples, also when the loader yields pre-made
batches; and chosen examples can be fetched again by position.
"""

import bisect
from typing import Any, Iterator, List, Optional, Sequence

import torch
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    Dataset,
    IterableDataset,
    SequentialSampler,
)

from captum_tracin_we._data.model_adapter import ModelAdapter, slice_batch
from captum_tracin_we._errors import TrainingDataError

_FIX = (
    "Pass the Dataset itself with `batch_size=`, or a DataLoader with the default "
    "sequential sampler (shuffle=False, no `sampler`/`batch_sampler`, "
    "drop_last=False)."
)


class TrainingData:
    r"""
    A checked view of the training DataLoader.

    Args:
        loader (DataLoader): The training batches.
        adapter (ModelAdapter): Reads the number of examples of a batch.

    Raises:
        TrainingDataError: If the loader shuffles, samples a subset or another
                    order, or drops the last batch.
    """

    def __init__(self, loader: DataLoader, adapter: ModelAdapter) -> None:
        check_sequential(loader, "training")
        self.loader = loader
        self.adapter = adapter
        self._batch_starts: Optional[List[int]] = None

    @property
    def premade_batches(self) -> bool:
        r"""True when each dataset item is already a batch (``batch_size=None``)."""
        return self.loader.batch_size is None

    @property
    def num_batches(self) -> Optional[int]:
        try:
            return len(self.loader)
        except TypeError:
            return None

    @property
    def num_examples(self) -> int:
        r"""The number of training examples (not batches)."""
        if not self.premade_batches and not isinstance(
            self.loader.dataset, IterableDataset
        ):
            return len(self.loader.dataset)  # type: ignore[arg-type]
        return self.batch_starts()[-1]

    def batches(self) -> Iterator[Any]:
        return iter(self.loader)

    def check_count(self, counted: int) -> None:
        r"""
        Checks that a pass over the batches saw as many examples as the data
        holds (a ``collate_fn`` that drops or splits examples would break the
        positions every score refers to).

        Raises:
            TrainingDataError: If the counts differ.
        """
        by_length = not self.premade_batches and not isinstance(
            self.loader.dataset, IterableDataset
        )
        if not by_length and self._batch_starts is None:
            return  # counting would need one more pass; the passes are compared
        expected = self.num_examples
        if counted != expected:
            raise TrainingDataError(
                f"A pass over the training DataLoader gave {counted} examples, but its "
                f"dataset holds {expected}: the collate_fn drops, splits or repeats "
                "examples. Scores are indexed by example position, so each dataset "
                "item must give one example (or use pre-made batches with "
                "batch_size=None)."
            )

    def batch_starts(self) -> List[int]:
        r"""The first example of every batch, and the total count last (cached)."""
        if self._batch_starts is None:
            starts = [0]
            for batch in self.loader:
                starts.append(starts[-1] + self.adapter.count(batch))
            self._batch_starts = starts
        return self._batch_starts

    def examples(self, indices: Sequence[int]) -> Iterator[Any]:
        r"""
        Batches holding the training examples ``indices`` (sorted, distinct), in
        that order. A map-style dataset of single examples is read by random
        access; otherwise the loader is iterated once and the wanted rows are
        cut out of its batches.
        """
        wanted = list(indices)
        loader = self.loader
        if not self.premade_batches and not isinstance(loader.dataset, IterableDataset):
            size = loader.batch_size or 1
            for start in range(0, len(wanted), size):
                chunk = wanted[start : start + size]
                yield loader.collate_fn([loader.dataset[i] for i in chunk])
            return
        yield from self._rows_from_batches(wanted)

    def _rows_from_batches(self, wanted: List[int]) -> Iterator[Any]:
        first = 0
        for batch in self.loader:
            count = self.adapter.count(batch)
            low = bisect.bisect_left(wanted, first)
            high = bisect.bisect_left(wanted, first + count)
            if high > low:
                rows = torch.tensor(wanted[low:high]) - first
                yield slice_batch(batch, rows, count)
            first += count
            if high == len(wanted):
                return


def check_sequential(loader: DataLoader, role: str = "training") -> None:
    r"""
    Refuses loaders whose order is not the dataset's own order: every example
    once, in order, none dropped. The loader is read once per checkpoint, so
    a different order on each pass would mix examples.

    Raises:
        TrainingDataError: Naming the sampler and the fix.
    """
    if getattr(loader, "drop_last", False):
        raise TrainingDataError(
            f"The {role} DataLoader has drop_last=True, so its last examples would "
            f"never be scored. {_FIX}"
        )
    if isinstance(loader.dataset, IterableDataset):
        return  # the dataset's iteration order is the order
    batch_sampler = loader.batch_sampler
    if batch_sampler is None:  # batch_size=None: each item is a batch
        sampler = loader.sampler
    elif type(batch_sampler) is BatchSampler:
        sampler = batch_sampler.sampler
    else:
        raise TrainingDataError(
            f"The {role} DataLoader uses a custom batch_sampler "
            f"({type(batch_sampler).__name__}); influence scores are indexed by "
            f"example position, so its order must be the dataset's. {_FIX}"
        )
    if type(sampler) is not SequentialSampler or sampler.data_source is not (
        loader.dataset
    ):
        raise TrainingDataError(
            f"The {role} DataLoader samples with {type(sampler).__name__}"
            f"{'' if type(sampler) is not SequentialSampler else ' over other data'}"
            ", which shuffles, reorders or subsets the examples; influence scores are "
            f"indexed by example position. {_FIX}"
        )


def check_dataset(dataset: Any) -> None:
    r"""Refuses an empty training set early."""
    try:
        size = len(dataset)
    except TypeError:
        return
    if size == 0:
        raise TrainingDataError(
            "The training set is empty; TracIn needs examples to score."
        )


def training_loader(
    train_dataset: Any, batch_size: Optional[int], pad_id: int, dataset_batch_size: int
) -> DataLoader:
    r"""
    The one reading of training data, for every method here.

    Args:
        train_dataset: A DataLoader (checked to keep its order), a tokenized
                    ``datasets.Dataset`` (padded with ``pad_id``), or any map
                    Dataset.
        batch_size (int, optional): Examples per batch of a Dataset; None for
                    ``dataset_batch_size`` (``datasets.Dataset``) or 1.
        pad_id (int): The padding id of the model.
        dataset_batch_size (int): Rows per batch of a ``datasets.Dataset``
                    when ``batch_size`` is None.

    Returns:
        loader (DataLoader): Sequential, every example once, in order.

    Raises:
        TrainingDataError: If the set is empty, or the DataLoader shuffles,
                    samples or drops examples.
    """
    from captum_tracin_we._data.hf_data import dataset_loader, is_hf_dataset

    if is_hf_dataset(train_dataset):
        train_dataset = dataset_loader(
            train_dataset, batch_size or dataset_batch_size, pad_id
        )
    check_dataset(as_dataset(train_dataset))
    if not isinstance(train_dataset, DataLoader):
        train_dataset = DataLoader(train_dataset, batch_size=batch_size or 1)
    check_sequential(train_dataset)
    return train_dataset


def as_dataset(train: Any) -> Dataset:
    return train.dataset if isinstance(train, DataLoader) else train
