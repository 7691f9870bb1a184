#!/usr/bin/env python3

r"""
The package's own checkpoint loaders, marked as loading a state dict into the
model and nothing else: only their loads can be kept in memory and replayed
(:class:`~captum_tracin_we._checkpoints.resident_checkpoints.ResidentCheckpoints`).
A user's loader may also set attributes, non-persistent buffers or extra
state that a kept copy of the state dict would not restore.
"""

from typing import Any, Callable, Set

_STATE_DICT_LOADERS: Set[Callable[..., Any]] = set()


def state_dict_loader(load_func: Callable[..., Any]) -> Callable[..., Any]:
    r"""Marks ``load_func`` as a loader whose only effect on the model is
    ``load_state_dict`` (returns it unchanged)."""
    _STATE_DICT_LOADERS.add(load_func)
    return load_func


def loads_state_dict_only(load_func: Any) -> bool:
    r"""Whether ``load_func`` is one of the loaders marked by
    :func:`state_dict_loader`."""
    return load_func in _STATE_DICT_LOADERS
