#!/usr/bin/env python3

r"""
Captum's batch convention for any text model: dict or tuple batches become
``(model inputs..., labels)`` tuples, and a wrapper calls the model with them
and returns its logits. Captum's TracIn methods take only that convention.
"""

from typing import Any, Callable, Iterator, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor
from torch.nn import Module
from torch.utils.data import DataLoader, IterableDataset

from captum_tracin_we._data.batch_labels import class_labels
from captum_tracin_we._data.hf_data import dataset_loader, is_hf_dataset
from captum_tracin_we._data.model_adapter import ModelAdapter, is_batch_list
from captum_tracin_we._data.training_data import check_sequential
from captum_tracin_we._errors import BatchError


class TupleBatches:
    r"""
    Turns the batches TracInWE takes (tuples, or dicts with ``"labels"``) into
    Captum's tuples, on the model's device. The keyword names of dict batches
    are fixed by the first batch seen; later batches must use the same ones.

    Args:
        model (torch.nn.Module): The model the batches are for.
        loss_fn (Callable): The loss; cross-entropy labels are checked and
                    ``(B, 1)`` class ids flattened, as TracInWE does.
    """

    def __init__(self, model: Module, loss_fn: Callable[..., Tensor]) -> None:
        self.adapter = ModelAdapter(model, _ParameterHolder(model))
        self.loss_fn = loss_fn
        self.keys: Optional[List[str]] = None
        self.num_args: Optional[int] = None

    def convert(self, batch: Any) -> Tuple[Any, ...]:
        r"""``(positional inputs..., keyword inputs in fixed order..., labels)``."""
        args, kwargs, labels, _ = self.adapter.split(batch)
        keys = sorted(kwargs)
        if self.keys is None:
            self.keys, self.num_args = keys, len(args)
        elif keys != self.keys or len(args) != self.num_args:
            extra = sorted(set(keys) - set(self.keys))
            missing = sorted(set(self.keys) - set(keys))
            raise BatchError(
                "Test batches must hold the same model inputs as the training "
                f"batches ({self._described(self.num_args, self.keys)}); this one "
                f"has {self._described(len(args), keys)}"
                + (f", extra {extra}" if extra else "")
                + (f", missing {missing}" if missing else "")
                + ". Drop or add those inputs, for example "
                "`{k: v for k, v in batch.items() if k in training_keys}`."
            )
        labels = class_labels(labels, self.loss_fn)
        return (*args, *(kwargs[key] for key in keys), labels)

    def call(self, model: Module, inputs: Sequence[Any]) -> Tensor:
        r"""Calls ``model`` with converted inputs (labels removed); its logits."""
        if self.num_args is None or self.keys is None:
            raise BatchError("No batch has been converted yet.")
        adapter = ModelAdapter(model, self.adapter.embedding)
        args = tuple(inputs[: self.num_args])
        kwargs = dict(zip(self.keys, inputs[self.num_args :]))
        return adapter.logits(args, kwargs)

    @staticmethod
    def _described(num_args: Optional[int], keys: Optional[List[str]]) -> str:
        return f"{num_args} positional input(s) and keys {keys}"


class LogitsModel(Module):
    r"""
    Calls the wrapped model with Captum tuples made by :class:`TupleBatches`
    and returns its logits (a Hugging Face model's ``.logits``).

    Args:
        model (torch.nn.Module): The model; it is registered as ``self.model``,
                    so a layer ``"a.b"`` of it is ``"model.a.b"`` here.
        batches (TupleBatches): The converter that made the tuples.
    """

    def __init__(self, model: Module, batches: TupleBatches) -> None:
        super().__init__()
        self.model = model
        self._batches = batches

    def forward(self, *inputs: Any) -> Tensor:
        return self._batches.call(self.model, inputs)


class ConvertedBatches(IterableDataset):
    r"""The batches of a DataLoader, converted to Captum tuples as they pass."""

    def __init__(self, loader: DataLoader, batches: TupleBatches) -> None:
        self.loader = loader
        self.batches = batches

    def __iter__(self) -> Iterator[Tuple[Any, ...]]:
        for batch in self.loader:
            yield self.batches.convert(batch)

    def __len__(self) -> int:
        return len(self.loader)


class _ParameterHolder:
    r"""Stands in for the embedding in :class:`ModelAdapter`: only its device."""

    def __init__(self, model: Module) -> None:
        self._model = model

    @property
    def weight(self) -> Tensor:
        for param in self._model.parameters():
            return param
        for buffer in self._model.buffers():
            return buffer
        return torch.empty(0)


def test_batches(
    inputs: Any, pad_id: int, dataset_batch_size: Optional[int] = 16
) -> Union[DataLoader, List[Any]]:
    r"""
    The one reading of test inputs, for every method here: a DataLoader (checked
    to keep its order, read as it is), a tokenized ``datasets.Dataset`` (a
    DataLoader of batches of ``dataset_batch_size``, or one batch if None), a
    list of batches, or one batch.

    Args:
        inputs: The test inputs.
        pad_id (int): The padding id, to pad the rows of a ``datasets.Dataset``.
        dataset_batch_size (int, optional): Rows per batch of a
                    ``datasets.Dataset``; None for one batch. Default: 16

    Returns:
        batches (DataLoader or list): Iterable more than once, in order.

    Raises:
        TrainingDataError: If a DataLoader shuffles or drops examples.
    """
    if is_hf_dataset(inputs):
        size = dataset_batch_size or max(1, len(inputs))
        return dataset_loader(inputs, size, pad_id)
    if isinstance(inputs, DataLoader):
        check_sequential(inputs, "test")
        return inputs
    if is_batch_list(inputs):
        return list(inputs)
    return [inputs]
