#!/usr/bin/env python3

r"""Checkpoint paths, the default checkpoint loader, and learning-rate checks."""

import math
import numbers
import os
import warnings
from typing import Any, Iterable, List, Optional, Union

import numpy as np
from torch import Tensor
from torch.nn import Module

from captum_tracin_we._checkpoints import trainer_runs
from captum_tracin_we._checkpoints.state_dict_loaders import state_dict_loader
from captum_tracin_we._checkpoints.torch_files import load_weights_file
from captum_tracin_we._errors import CheckpointError

_warned_bare_state_dict = False


@state_dict_loader
def load_checkpoint_with_lr(model: Module, path: str) -> float:
    r"""
    Loads a checkpoint into ``model`` in place and returns its learning rate.

    This is TracInWE's default ``checkpoints_load_func``. It reads, with
    ``torch.load(..., weights_only=True)`` and ``map_location="cpu"``, either

    - a dict ``{"model_state_dict": state_dict, "learning_rate": lr}`` (other
      keys such as ``"optimizer_state_dict"`` are ignored), or
    - a bare state dict, whose learning rate is taken to be 1.0 (with a
      warning, once per process), or
    - a Hugging Face checkpoint folder (``model.safetensors`` or
      ``pytorch_model.bin``), whose learning rate comes from the Trainer's
      records (see :mod:`captum_tracin_we.hf`).

    Args:
        model (torch.nn.Module): The model to load into.
        path (str): The checkpoint file.

    Returns:
        learning_rate (float): The learning rate in effect at this checkpoint,
                    a finite number >= 0; TracIn multiplies the checkpoint's
                    contribution by it.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        CheckpointError: If the file cannot be read safely, does not fit
                    ``model``, or stores a learning rate that is not a finite
                    number >= 0.
    """
    if os.path.isdir(path):
        if trainer_runs.is_checkpoint_folder(path):
            return trainer_runs.load_trainer_checkpoint(model, path)
        raise CheckpointError(
            f"Checkpoint {path!r} is a folder but not a Hugging Face checkpoint "
            "(no model.safetensors or pytorch_model.bin); the default loader reads "
            "those folders and files saved as {'model_state_dict': ..., "
            "'learning_rate': lr}. Pass those, or a `checkpoints_load_func` that "
            "reads your folders."
        )
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Checkpoint file {path!r} does not exist.")
    try:
        checkpoint = load_weights_file(path)
    except Exception as error:  # torch raises many types for unreadable files
        raise CheckpointError(
            f"Cannot read checkpoint {path!r} with torch.load(weights_only=True): "
            f"{type(error).__name__}: {str(error)[:300]}. Save checkpoints with "
            "torch.save({'model_state_dict': model.state_dict(), 'learning_rate': lr},"
            " path), or pass a `checkpoints_load_func`."
        ) from None
    state_dict, learning_rate = _split_checkpoint(checkpoint, path)
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as error:
        raise CheckpointError(
            f"Checkpoint {path!r} does not fit the model: {str(error)[:500]}"
        ) from None
    return learning_rate


def _split_checkpoint(checkpoint: Any, path: str) -> "tuple[dict, float]":
    global _warned_bare_state_dict
    if not isinstance(checkpoint, dict):
        raise CheckpointError(
            f"Checkpoint {path!r} holds a {type(checkpoint).__name__}, not a state "
            "dict or a dict with 'model_state_dict'."
        )
    if "model_state_dict" in checkpoint:
        if "learning_rate" not in checkpoint:
            raise CheckpointError(
                f"Checkpoint {path!r} has 'model_state_dict' but no 'learning_rate'. "
                "Save the rate in effect at this checkpoint under 'learning_rate'."
            )
        return checkpoint["model_state_dict"], checked_learning_rate(
            checkpoint["learning_rate"], path
        )
    if not _warned_bare_state_dict:
        _warned_bare_state_dict = True
        warnings.warn(
            f"Checkpoint {path!r} is a bare state dict without a learning rate; "
            "TracIn-WE uses learning rate 1.0 for it (and for other bare state "
            "dicts). Save {'model_state_dict': ..., 'learning_rate': lr} to weight "
            "checkpoints by their rates.",
            stacklevel=4,
        )
    return checkpoint, 1.0


def checked_learning_rate(
    value: Any, checkpoint: Any, source: Optional[str] = None
) -> float:
    r"""
    The learning rate of ``checkpoint`` as a float, or a clear error.

    Accepts Python and numpy numbers and one-element tensors; refuses strings,
    booleans, None, containers, NaN, infinities and negative rates (TracIn
    weights each checkpoint by a step size, which is never negative).

    Args:
        value (Any): The rate as stored or returned.
        checkpoint (Any): The checkpoint (its path names it in messages).
        source (str, optional): Where the rate was read, for rates read from
                    a file other than the checkpoint (a Trainer's
                    ``trainer_state.json``, the rate file), for example
                    ``"'run/checkpoint-3/trainer_state.json' (log_history, step
                    3)"``. Default: None (the checkpoint or its loader).

    Returns:
        learning_rate (float): The rate, a finite number >= 0.

    Raises:
        CheckpointError: Naming the checkpoint, the file, the value and the fix.
    """
    if isinstance(value, Tensor) and value.numel() == 1:
        value = value.item()
    elif isinstance(value, (np.ndarray, np.generic)) and value.size == 1:
        value = value.item()
    elif isinstance(value, numbers.Number) and not isinstance(value, numbers.Real):
        value = _real_or_same(value)
    name = checkpoint_name(checkpoint)
    origin = f", read from {source}," if source else ""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise CheckpointError(
            f"The learning rate of checkpoint {name}{origin} is {value!r} (a "
            f"{type(value).__name__}); it must be a number. "
            + _rate_fix(
                source, "Store it as a float (for example 'learning_rate': 1e-3)"
            )
        )
    rate = float(value)
    if not math.isfinite(rate) or rate < 0:
        raise CheckpointError(
            f"The learning rate of checkpoint {name}{origin} is {rate}; it must be "
            "a finite number >= 0 (the step size in effect at that checkpoint). "
            + _rate_fix(source, "Store the rate in effect at that checkpoint")
        )
    return rate


def _rate_fix(source: Optional[str], store: str) -> str:
    if source:
        return (
            'Correct that file (a float, for example "learning_rate": 1e-3), or '
            "pass the rates with a `checkpoints_load_func`."
        )
    return f"{store}, or make `checkpoints_load_func` return one."


def _real_or_same(value: Any) -> Any:
    try:  # decimal.Decimal and other exact numbers
        return float(value)
    except (TypeError, ValueError):
        return value


def checkpoint_name(checkpoint: Any) -> str:
    r"""A short name of a checkpoint for messages: its path, or its type."""
    if isinstance(checkpoint, str):
        return repr(checkpoint)
    return f"<{type(checkpoint).__name__} object>"


def checkpoint_paths(checkpoints: Union[str, Iterable[Any]]) -> List[Any]:
    r"""
    Validates checkpoint paths early, before any work is done.

    A Trainer output folder becomes its ``checkpoint-<step>`` folders in step
    order, and a Hugging Face model folder a one-element list; another
    directory is expanded to its entries, sorted by name (hidden ones are
    skipped); a single file becomes a one-element list, and a list of paths
    must name existing files or folders (folders are for a custom
    ``checkpoints_load_func``; the default loader explains that it reads
    files). Non-path items (in-memory checkpoints read by a custom loader) are
    passed through.

    Raises:
        CheckpointError: For a missing path, an empty directory, or an empty
                    list.
    """
    if isinstance(checkpoints, (str, os.PathLike)):
        return _paths_in(os.fspath(checkpoints))
    items = [os.fspath(c) if isinstance(c, os.PathLike) else c for c in checkpoints]
    if not items:
        raise CheckpointError("No checkpoints were given; TracIn needs at least one.")
    missing = [c for c in items if isinstance(c, str) and not os.path.exists(c)]
    if missing:
        raise CheckpointError(f"Checkpoint file(s) not found: {missing}.")
    return items


def _paths_in(path: str) -> List[str]:
    if os.path.isfile(path):
        return [path]
    if not os.path.isdir(path):
        raise CheckpointError(f"Checkpoint path {path!r} does not exist.")
    if trainer_runs.is_trainer_run(path):
        return trainer_runs.trainer_checkpoints(path)
    if trainer_runs.is_checkpoint_folder(path):
        return [path]
    names = sorted(name for name in os.listdir(path) if not name.startswith("."))
    if not names:
        raise CheckpointError(f"Checkpoint folder {path!r} is empty.")
    return [os.path.join(path, name) for name in names]
