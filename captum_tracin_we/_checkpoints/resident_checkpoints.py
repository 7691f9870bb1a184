#!/usr/bin/env python3

r"""
Checkpoints kept in memory for a long-lived process that scores one query
after another (the explorer): each checkpoint is read from disk once, and a
later load points the model's tensors at the kept copy instead of reading
the file and copying every weight again.
"""

import weakref
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
from torch import Tensor
from torch.nn import Module

from captum_tracin_we._checkpoints.checkpoint_pass import checkpoint_file_key

LoadFunc = Callable[[Module, Any], Any]


@dataclass
class _Kept:
    key: Tuple[Any, ...]
    rate: Any
    tensors: Dict[str, Tensor]
    nbytes: int


class ResidentCheckpoints:
    r"""
    A checkpoint loader that keeps each checkpoint's weights in memory after
    it first loads it. A later load of the same checkpoint into the same
    model points every parameter and buffer at the kept tensors
    (``Tensor.set_``: no file read, no copy); the learning rate is the one the
    wrapped loader returned.

    Every computation at a kept checkpoint runs on the kept tensors, the
    first one included (the model is pointed at them right after they are
    taken), so a query's numbers do not depend on which query came first.

    A checkpoint is kept only when it is a file or folder on disk. Its size,
    modification and change times and inode (of every file in a folder) are
    checked at every load: a changed checkpoint is read again and kept anew.
    Checkpoints that would take the kept total over ``budget_bytes``, models
    with any tensor off the CPU (accelerator memory is left to the model's
    own work), and loads into any other model than the first one, go through
    the wrapped loader as before; before such a load, tensors of the model
    that point at kept ones get their own storage again, so a loader writing
    in place never changes a kept checkpoint.

    Only a loader whose one effect on the model is ``load_state_dict``
    should be wrapped (the package's own loaders, see
    :func:`~captum_tracin_we._checkpoints.state_dict_loaders.loads_state_dict_only`):
    a kept load restores the state dict's tensors and nothing else, and a
    model with non-tensor extra state is never kept. Other tensors that view
    a parameter's storage (not through the state dict) would keep viewing the
    old storage.

    Another loader or an optimizer may load into the same model in between:
    a kept checkpoint whose tensors were written through the model (their
    version moved since this loader pointed the model at them) is dropped
    and read from disk again at its next load. A write through ``.data``
    moves no version and is not seen: use this loader on a model that only
    it loads into (the explorer's own copy).

    Args:
        load_func (Callable): The loader wrapped: ``load_func(model,
                    checkpoint)`` loads in place and returns the learning rate.
        budget_bytes (int): The most bytes kept in all, >= 0 (0 keeps none).
        model (nn.Module, optional): The model it loads into. Default: None
                    (the first model it is called with)
    """

    def __init__(
        self, load_func: LoadFunc, budget_bytes: int, model: Optional[Module] = None
    ) -> None:
        if isinstance(budget_bytes, bool) or not isinstance(budget_bytes, int):
            raise TypeError(f"`budget_bytes` must be an int, got {budget_bytes!r}.")
        if budget_bytes < 0:
            raise ValueError(f"`budget_bytes` must be >= 0, got {budget_bytes}.")
        self.load_func = load_func
        self.budget_bytes = budget_bytes
        self._kept: Dict[str, _Kept] = {}
        self._model: Optional[weakref.ref[Module]] = (
            None if model is None else weakref.ref(model)
        )
        self._pointed: List[Tuple[Tensor, int, str]] = []
        self.reads = 0  # loads that went through the wrapped loader

    @property
    def kept_bytes(self) -> int:
        r"""Bytes held by the kept checkpoints."""
        return sum(kept.nbytes for kept in self._kept.values())

    @property
    def kept_count(self) -> int:
        r"""How many checkpoints are kept."""
        return len(self._kept)

    def __call__(self, model: Module, checkpoint: Any) -> Any:
        if self._model is None:
            self._model = weakref.ref(model)
        if self._model() is not model:
            self.reads += 1
            return self.load_func(model, checkpoint)
        self._drop_written()
        key = checkpoint_file_key(checkpoint, self.load_func)
        kept = self._kept.get(key[1]) if key is not None else None
        state = _tensors(model)
        if kept is not None and kept.key == key and _fits(state, kept.tensors):
            self._point(state, kept)
            return kept.rate
        if kept is not None:  # the file changed, or the model did
            del self._kept[kept.key[1]]
        self._release(state)
        self.reads += 1
        rate = self.load_func(model, checkpoint)
        if key is not None and key == checkpoint_file_key(checkpoint, self.load_func):
            self._keep(model, key, rate)
        return rate

    def _keep(self, model: Module, key: Tuple[Any, ...], rate: Any) -> None:
        everything = model.state_dict(keep_vars=True)
        state = {n: v for n, v in everything.items() if isinstance(v, Tensor)}
        if len(state) != len(everything):
            return  # extra state that is not a tensor: only a load restores it
        if any(value.device.type != "cpu" for value in state.values()):
            return  # accelerator memory is kept for the model's own work
        distinct = {id(value): value for value in state.values()}  # tied: one
        nbytes = sum(t.numel() * t.element_size() for t in distinct.values())
        if self.kept_bytes + nbytes > self.budget_bytes:
            return
        copies = {i: value.detach().clone() for i, value in distinct.items()}
        tensors = {name: copies[id(value)] for name, value in state.items()}
        kept = self._kept[key[1]] = _Kept(key, rate, tensors, nbytes)
        self._point(state, kept)

    def _point(self, state: Dict[str, Tensor], kept: _Kept) -> None:
        r"""Points the model's tensors at ``kept``'s, noting their versions."""
        with torch.no_grad():
            for name, value in state.items():
                # Always set_: it moves the tensor's version, which tells the
                # checkpoint pass that the load wrote the whole state.
                value.set_(kept.tensors[name])
        self._pointed = [(v, v._version, kept.key[1]) for v in state.values()]

    def _drop_written(self) -> None:
        r"""Drops the kept checkpoint the model was pointed at if something
        wrote to it through the model since."""
        for value, version, path in self._pointed:
            if value._version != version:
                self._kept.pop(path, None)
                break
        self._pointed = []

    def _release(self, state: Dict[str, Tensor]) -> None:
        r"""Gives tensors that point at kept ones their own storage."""
        kept = {
            t.untyped_storage().data_ptr()
            for entry in self._kept.values()
            for t in entry.tensors.values()
        }
        with torch.no_grad():
            for value in state.values():
                if value.untyped_storage().data_ptr() in kept:
                    value.set_(value.detach().clone())


def _fits(state: Dict[str, Tensor], kept: Dict[str, Tensor]) -> bool:
    r"""Whether every tensor of the model has a kept tensor of its name with
    the same shape, strides, dtype and device (else the checkpoint is loaded,
    and a mismatch is the loader's to report)."""
    return state.keys() == kept.keys() and all(
        value.shape == kept[name].shape
        and value.stride() == kept[name].stride()
        and value.dtype == kept[name].dtype
        and value.device == kept[name].device
        for name, value in state.items()
    )


def _tensors(model: Module) -> Dict[str, Tensor]:
    return {
        name: value
        for name, value in model.state_dict(keep_vars=True).items()
        if isinstance(value, Tensor)
    }
