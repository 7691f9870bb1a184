#!/usr/bin/env python3

r"""
Everything TracIn-WE needs to know about a model and its batches, in one place:
which module is the token-embedding table, how a batch is split into model
arguments and labels (Captum tuples or Hugging Face dicts), how logits are read
from the output, and how the model is put into a scoring state.
"""

from collections.abc import Mapping
from typing import Any, Dict, List, Optional, Tuple, Union

import torch
from torch import Tensor
from torch.nn import Embedding, Module

from captum_tracin_we._errors import BatchError

_LABEL_KEYS = ("labels", "label")


def find_embedding_layer(
    model: Module, embedding_layer: Optional[Union[Module, str]] = None
) -> Embedding:
    r"""
    Resolves the token-embedding table of ``model``.

    Args:
        model (torch.nn.Module): The model whose token ids pass through one
                    ``nn.Embedding``.
        embedding_layer (torch.nn.Module or str, optional): The embedding module,
                    or its dotted name in ``model`` (for example
                    ``"bert.embeddings.word_embeddings"``). If None,
                    ``get_input_embeddings()`` of ``model`` (or of its outermost
                    submodule that has one, as Hugging Face models do) is used;
                    otherwise the single ``nn.Embedding`` of ``model``.
                    Default: None

    Returns:
        embedding (torch.nn.Embedding): The token-embedding module.

    Raises:
        ValueError: If the name does not exist, the module is not an
                    ``nn.Embedding``, or there is no or more than one candidate.
    """
    candidates = _embedding_names(model)
    if isinstance(embedding_layer, str):
        try:
            module = model.get_submodule(embedding_layer)
        except AttributeError:
            raise ValueError(
                f"`embedding_layer={embedding_layer!r}` is not a submodule of the "
                f"model. nn.Embedding modules of the model: {candidates or 'none'}."
            ) from None
        return _require_embedding(module, embedding_layer, candidates)
    if isinstance(embedding_layer, Module):
        return _require_embedding(embedding_layer, type(embedding_layer).__name__, [])
    if embedding_layer is not None:
        raise TypeError(
            "`embedding_layer` must be an nn.Embedding, its dotted name, or None; "
            f"got {type(embedding_layer).__name__}."
        )
    hf_embedding = _hf_input_embeddings(model)
    if hf_embedding is not None:
        return hf_embedding
    if len(candidates) == 1:
        return model.get_submodule(candidates[0])
    if not candidates:
        raise ValueError(
            "The model has no nn.Embedding module, so TracIn-WE has no word-embedding "
            "layer to use. Pass `embedding_layer=` the module that maps token ids "
            "to vectors (it must be an nn.Embedding)."
        )
    raise ValueError(
        f"The model has several nn.Embedding modules: {candidates}. Pass "
        "`embedding_layer=` the name of the token (word) embedding, for example "
        f"`embedding_layer={candidates[0]!r}`."
    )


def _embedding_names(model: Module) -> List[str]:
    return [name for name, m in model.named_modules() if isinstance(m, Embedding)]


def _require_embedding(module: Module, name: str, candidates: List[str]) -> Embedding:
    if not isinstance(module, Embedding):
        hint = (
            f" nn.Embedding modules of the model: {candidates}." if candidates else ""
        )
        raise ValueError(
            f"The embedding layer {name!r} is a {type(module).__name__}, not an "
            f"nn.Embedding. TracIn-WE needs the token-embedding table.{hint}"
        )
    return module


def _hf_input_embeddings(model: Module) -> Optional[Embedding]:
    for module in model.modules():
        getter = getattr(module, "get_input_embeddings", None)
        if not callable(getter):
            continue
        try:
            embedding = getter()
        except (NotImplementedError, AttributeError):
            continue
        if isinstance(embedding, Embedding):
            return embedding
    return None


class ModelAdapter:
    r"""
    Calls a model on one batch in either of the two conventions TracIn-WE
    accepts, and reads its logits.

    - Captum's tuple convention: ``(arg_1, ..., arg_n, labels)``; the model is
      called as ``model(arg_1, ..., arg_n)``.
    - Hugging Face's mapping convention: a dict or ``BatchEncoding`` with a
      ``"labels"`` (or ``"label"``) key; the model is called with the other keys
      as keyword arguments.

    Args:
        model (torch.nn.Module): The model.
        embedding (torch.nn.Embedding): Its token-embedding table; batches are
                    moved to this module's device.
    """

    def __init__(self, model: Module, embedding: Embedding) -> None:
        self.model = model
        self.embedding = embedding

    @property
    def device(self) -> torch.device:
        return self.embedding.weight.device

    def split(
        self, batch: Any
    ) -> Tuple[Tuple[Any, ...], Dict[str, Any], Tensor, Optional[Tensor]]:
        r"""
        Splits a batch into positional arguments, keyword arguments, labels and
        the attention mask (None when the batch has none), all moved to the
        embedding's device.
        """
        if isinstance(batch, Mapping):
            label_key = next((key for key in _LABEL_KEYS if key in batch), None)
            if label_key is None:
                raise BatchError(
                    "A dict batch must hold the labels under the key 'labels' (or "
                    f"'label'); found keys {sorted(batch.keys())}."
                )
            kwargs = {
                key: self._to_device(value)
                for key, value in batch.items()
                if key not in _LABEL_KEYS
            }
            labels = self._labels(batch[label_key])
            return (), kwargs, labels, kwargs.get("attention_mask")
        if isinstance(batch, (tuple, list)):
            if len(batch) < 2:
                raise BatchError(
                    "A tuple batch must be (model inputs..., labels), with the labels "
                    f"last, as in Captum's TracInCP; got {len(batch)} element(s)."
                )
            args = tuple(self._to_device(value) for value in batch[:-1])
            return args, {}, self._labels(batch[-1]), None
        raise TypeError(
            "A batch must be a tuple (model inputs..., labels) or a dict with a "
            f"'labels' key; got {type(batch).__name__}."
        )

    def count(self, batch: Any) -> int:
        r"""The number of examples in ``batch`` (its labels), without moving it."""
        labels = torch.as_tensor(_raw_labels(batch))
        if labels.dim() == 0:
            raise BatchError(
                "A batch has one scalar label; each batch needs one label per "
                "example. For a DataLoader over single examples, set its batch_size."
            )
        return int(labels.shape[0])

    def logits(self, args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> Tensor:
        r"""
        Runs the model and returns its logits: the output itself when it is a
        tensor, else its ``.logits`` (Hugging Face ``ModelOutput``), else its
        first element.
        """
        output = self.model(*args, **kwargs)
        if isinstance(output, Tensor):
            return output
        logits = getattr(output, "logits", None)
        if isinstance(logits, Tensor):
            return logits
        if isinstance(output, Mapping) and isinstance(output.get("logits"), Tensor):
            return output["logits"]
        if (
            isinstance(output, (tuple, list))
            and output
            and isinstance(output[0], Tensor)
        ):
            return output[0]
        raise TypeError(
            "The model must return logits: a tensor, an object with `.logits`, or "
            f"a tuple whose first element is a tensor; got {type(output).__name__}."
        )

    def batch_tensors(
        self, args: Tuple[Any, ...], kwargs: Dict[str, Any]
    ) -> List[Tensor]:
        r"""The integer tensors among the model arguments: candidate token ids."""
        values = list(args) + list(kwargs.values())
        return [
            v
            for v in values
            if isinstance(v, Tensor) and not v.is_floating_point() and v.dim() >= 1
        ]

    def per_example_inputs(
        self, args: Tuple[Any, ...], kwargs: Dict[str, Any], batch_size: int
    ) -> List[Tensor]:
        r"""The model arguments with one row per example (first dimension ``B``)."""
        values = list(args) + [kwargs[key] for key in sorted(kwargs)]
        return [
            v
            for v in values
            if isinstance(v, Tensor) and v.dim() >= 1 and v.shape[0] == batch_size
        ]

    def _labels(self, labels: Any) -> Tensor:
        return torch.as_tensor(labels).to(self.device)

    def _to_device(self, value: Any) -> Any:
        return value.to(self.device) if isinstance(value, Tensor) else value


def _raw_labels(batch: Any) -> Any:
    if isinstance(batch, Mapping):
        for key in _LABEL_KEYS:
            if key in batch:
                return batch[key]
        raise BatchError(
            "A dict batch must hold the labels under the key 'labels' (or 'label'); "
            f"found keys {sorted(batch.keys())}."
        )
    if isinstance(batch, (tuple, list)) and len(batch) >= 2:
        return batch[-1]
    raise BatchError(
        "A batch must be a tuple (model inputs..., labels) or a dict with a "
        f"'labels' key; got {type(batch).__name__}."
    )


def slice_batch(batch: Any, rows: Tensor, size: int) -> Any:
    r"""
    The examples ``rows`` of a collated batch of ``size`` examples: every tensor
    whose first dimension is ``size`` is indexed, other values are kept.
    """

    def take(value: Any) -> Any:
        if isinstance(value, Tensor) and value.dim() and value.shape[0] == size:
            return value[rows.to(value.device)]
        return value

    if isinstance(batch, Mapping):
        return {key: take(value) for key, value in batch.items()}
    return type(batch)(take(value) for value in batch)


def padding_id(model: Module, embedding: Module) -> int:
    r"""The padding id: the embedding's, else the model config's, else 0."""
    if getattr(embedding, "padding_idx", None) is not None:
        return int(embedding.padding_idx)
    pad = getattr(getattr(model, "config", None), "pad_token_id", None)
    return int(pad) if isinstance(pad, int) else 0


def is_batch_list(inputs: Any) -> bool:
    r"""
    A list of batches (tuples, lists or dicts, as ``list(loader)`` gives them),
    rather than one batch given as a list of tensors.
    """
    return (
        isinstance(inputs, list)
        and bool(inputs)
        and all(isinstance(b, (tuple, list, Mapping)) for b in inputs)
    )
