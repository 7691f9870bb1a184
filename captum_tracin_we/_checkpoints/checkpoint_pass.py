#!/usr/bin/env python3

r"""
The one loop every TracIn-WE computation runs: for each checkpoint, load it,
check its learning rate, put the model in its scoring state, and hand it to
the caller. Influence, self-influence, word influence, index builds and index
queries all go through :func:`checkpoint_pass`.
"""

import functools
import hashlib
import os
import threading
import warnings
import weakref
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.nn import Module

from captum_tracin_we._checkpoints.checkpoints import (
    checked_learning_rate,
    checkpoint_name,
)
from captum_tracin_we._errors import CheckpointError

LoadFunc = Callable[[Module, Any], Any]


@dataclass
class LoadedCheckpoint:
    r"""
    A checkpoint loaded into the model, in the scoring state.

    Attributes:
        position (int): Index of the checkpoint in the checkpoint list.
        checkpoint (Any): The checkpoint as given (usually a path).
        learning_rate (float): Its learning rate, finite and >= 0.
        model (torch.nn.Module): The model, holding this checkpoint's weights.
    """

    position: int
    checkpoint: Any
    learning_rate: float
    model: Module
    file_key: Optional[Tuple[Any, ...]] = None

    def fingerprint(self) -> str:
        r"""
        SHA-256 of every entry of the loaded state dict (names and values).

        For a checkpoint that is a file or folder on disk, whose loading wrote
        every tensor of the state, the result is remembered for the loader and
        the path's size, modification and change times and inode (of every file
        in a folder), so repeated queries do not hash unchanged checkpoints
        again. The change time moves on every write and cannot be set back, so a
        rewritten file is always hashed anew. A loader that writes only part of
        the state is hashed every time. This assumes, as TracIn does, that a
        loader's result depends only on the checkpoint it is given.
        """
        if self.file_key is None:
            return state_fingerprint(self.model)
        if self.file_key not in _FILE_FINGERPRINTS:
            _FILE_FINGERPRINTS[self.file_key] = state_fingerprint(self.model)
        return _FILE_FINGERPRINTS[self.file_key]


_FILE_FINGERPRINTS: Dict[Tuple[Any, ...], str] = {}


def checkpoint_file_key(
    checkpoint: Any, load_func: LoadFunc
) -> Optional[Tuple[Any, ...]]:
    r"""Identifies a checkpoint file's (or folder's) contents on disk, or None."""
    if not isinstance(checkpoint, str):
        return None
    try:
        if os.path.isfile(checkpoint):
            stats = [_stat(checkpoint)]
        elif os.path.isdir(checkpoint):
            names = sorted(os.listdir(checkpoint))
            paths = [os.path.join(checkpoint, name) for name in names]
            stats = [_stat(path) for path in paths if os.path.isfile(path)]
        else:
            return None
    except OSError:
        return None
    return (id(load_func), os.path.realpath(checkpoint), tuple(stats))


def _versions(model: Module) -> Dict[str, Tuple[int, int]]:
    return {
        name: (id(value), value._version)
        for name, value in model.state_dict(keep_vars=True).items()
        if isinstance(value, torch.Tensor)
    }


def _all_written(model: Module, before: Dict[str, Tuple[int, int]]) -> bool:
    r"""
    True when the loader wrote every tensor of the state (its version moved),
    so the state is a function of the checkpoint alone and its fingerprint may
    be remembered for the checkpoint.
    """
    after = _versions(model)
    return after.keys() == before.keys() and all(
        after[name][0] != before[name][0] or after[name][1] != before[name][1]
        for name in after
    )


def _stat(path: str) -> Tuple[Any, ...]:
    status = os.stat(path)
    return (
        os.path.basename(path),
        status.st_size,
        status.st_mtime_ns,
        status.st_ctime_ns,  # changes on every write; cannot be set back
        status.st_ino,
        status.st_dev,
    )


def checkpoint_pass(
    model: Module,
    checkpoints: Sequence[Any],
    load_func: LoadFunc,
    positions: Optional[Sequence[int]] = None,
) -> Iterator[LoadedCheckpoint]:
    r"""
    Loads each checkpoint in turn and yields it, with the model in scoring mode
    (eval, parameters frozen) for the whole pass and every module's mode and
    every parameter's ``requires_grad`` restored afterwards, also when the
    caller stops early or raises.

    Args:
        model (torch.nn.Module): The model to load into.
        checkpoints (sequence): The checkpoints.
        load_func (Callable): ``load_func(model, checkpoint)`` loads in place and
                    returns the learning rate.
        positions (sequence of int, optional): Only these checkpoints.
                    Default: None (all)

    Yields:
        checkpoint (LoadedCheckpoint): One per checkpoint, in order.
    """
    chosen = range(len(checkpoints)) if positions is None else positions
    with scoring_mode(model):
        for position in chosen:
            checkpoint = checkpoints[position]
            key = checkpoint_file_key(checkpoint, load_func)
            before = _versions(model)
            rate = checked_learning_rate(load_func(model, checkpoint), checkpoint)
            if key is not None and key != checkpoint_file_key(checkpoint, load_func):
                raise CheckpointError(
                    f"Checkpoint {checkpoint_name(checkpoint)} changed on disk while "
                    "it was loaded (is it being saved?), so the model may hold a mix "
                    "of two versions. Run again once it is written."
                )
            if not _all_written(model, before):
                key = None  # a partial load: its state is hashed every time
            _freeze(model)  # the loader may have changed modes or flags
            yield LoadedCheckpoint(position, checkpoint, rate, model, key)


@contextmanager
def kept_state(model: Module) -> Iterator[None]:
    r"""
    Restores every module's train/eval mode and every parameter's
    ``requires_grad`` on exit, whatever the body changed (a checkpoint loader,
    Captum's ``TracInCP`` turning gradients on for its layers).
    """
    modes = [(module, module.training) for module in model.modules()]
    flags = [(param, param.requires_grad) for param in model.parameters()]
    try:
        yield
    finally:
        for param, flag in flags:
            param.requires_grad_(flag)
        for module, mode in modes:
            module.training = mode


@contextmanager
def scoring_mode(model: Module) -> Iterator[None]:
    r"""
    Puts every module of ``model`` in eval mode with every parameter's
    ``requires_grad`` off (TracIn-WE only needs gradients at the embedding
    output), and restores each module's own mode and each parameter's flag
    afterwards.
    """
    with kept_state(model):
        _freeze(model)
        yield


def _freeze(model: Module) -> None:
    model.eval()
    for param in model.parameters():
        param.requires_grad_(False)


def state_fingerprint(model: Module) -> str:
    r"""
    SHA-256 of the model's whole state dict: every parameter and buffer, with
    its name, dtype and shape. Identifies the weights a checkpoint put in the
    model, whichever layer changed.
    """
    digest = hashlib.sha256()
    for name, value in model.state_dict().items():
        if not isinstance(value, torch.Tensor):  # extra state of custom modules
            digest.update(f"{name}|{type(value).__name__}|{value!r}|".encode())
            continue
        tensor = value.detach()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(_tensor_bytes(tensor))
    return digest.hexdigest()


def _tensor_bytes(tensor: torch.Tensor) -> memoryview:
    flat = tensor.cpu().contiguous().reshape(-1)
    if flat.dtype == torch.bfloat16:
        flat = flat.view(torch.int16)
    return memoryview(np.ascontiguousarray(flat.numpy()))


def warn_if_training(model: Module, name: str) -> None:
    r"""Warns that a model in train mode is scored in eval mode."""
    training: List[str] = [
        n or "<model>" for n, m in model.named_modules() if m.training
    ]
    if training:
        warnings.warn(
            f"{name}: the model is in train mode. It is switched to eval mode (no "
            "dropout) while influence is computed, and every module's mode is "
            "restored afterwards.",
            stacklevel=3,
        )


_MODEL_LOCKS: "weakref.WeakKeyDictionary[Module, Any]" = weakref.WeakKeyDictionary()
_MODEL_LOCKS_GUARD = threading.Lock()


def model_lock(model: Module) -> Any:
    r"""
    The re-entrant lock of ``model``: every scoring call loads checkpoints
    into the model and switches its modes and ``requires_grad`` flags, so two
    calls on one model from two threads would mix their weights. Each
    TracInWE and Captum-method call holds this lock while it runs.
    """
    with _MODEL_LOCKS_GUARD:
        lock = _MODEL_LOCKS.get(model)
        if lock is None:
            lock = _MODEL_LOCKS[model] = threading.RLock()
        return lock


def one_call_per_model(method: Callable[..., Any]) -> Callable[..., Any]:
    r"""
    Runs a scoring method under the lock of the user's model: ``self.model``,
    or ``self.user_model`` where the object wraps the model (Captum's methods).
    The one lock of the package: two methods on one model never interleave.
    """

    @functools.wraps(method)
    def locked(self: Any, *args: Any, **kwargs: Any) -> Any:
        with model_lock(getattr(self, "user_model", self.model)):
            return method(self, *args, **kwargs)

    return locked
