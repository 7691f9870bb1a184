#!/usr/bin/env python3

r"""Checkpoint paths and the default checkpoint loader."""

import glob
import os
from typing import Any, Iterable, List, Union

import torch
from torch.nn import Module


def load_checkpoint_with_lr(model: Module, path: str) -> float:
    r"""
    Loads a checkpoint into ``model`` in place and returns its learning rate.

    This is TracInWE's default ``checkpoints_load_func``. It reads, with
    ``torch.load(..., weights_only=True)`` and ``map_location="cpu"``, either

    - a dict ``{"model_state_dict": state_dict, "learning_rate": lr}`` (other
      keys such as ``"optimizer_state_dict"`` are ignored), or
    - a bare state dict, whose learning rate is taken to be 1.0.

    Args:
        model (torch.nn.Module): The model to load into.
        path (str): The checkpoint file.

    Returns:
        learning_rate (float): The learning rate in effect at this checkpoint;
                    TracIn multiplies the checkpoint's contribution by it.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ValueError: If the file cannot be read safely or does not fit ``model``.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Checkpoint file {path!r} does not exist.")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for unreadable files
        raise ValueError(
            f"Cannot read checkpoint {path!r} with torch.load(weights_only=True): "
            f"{type(error).__name__}: {str(error)[:300]}. Save checkpoints with "
            "torch.save({'model_state_dict': model.state_dict(), 'learning_rate': lr},"
            " path), or pass a `checkpoints_load_func`."
        ) from None
    state_dict, learning_rate = _split_checkpoint(checkpoint, path)
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as error:
        raise ValueError(
            f"Checkpoint {path!r} does not fit the model: {str(error)[:500]}"
        ) from None
    return learning_rate


def _split_checkpoint(checkpoint: Any, path: str) -> "tuple[dict, float]":
    if not isinstance(checkpoint, dict):
        raise ValueError(
            f"Checkpoint {path!r} holds a {type(checkpoint).__name__}, not a state "
            "dict or a dict with 'model_state_dict'."
        )
    if "model_state_dict" in checkpoint:
        return checkpoint["model_state_dict"], float(
            checkpoint.get("learning_rate", 1.0)
        )
    return checkpoint, 1.0


def checkpoint_paths(checkpoints: Union[str, Iterable[Any]]) -> Union[List[Any], str]:
    r"""
    Validates checkpoint paths early, before any work is done.

    A directory is expanded to its files (sorted as TracInCPBase sorts them), a
    single file becomes a one-element list, and a list of paths must name
    existing files. Non-path items (in-memory checkpoints read by a custom
    loader) are passed through.
    """
    if isinstance(checkpoints, str):
        if os.path.isfile(checkpoints):
            return [checkpoints]
        if not os.path.isdir(checkpoints):
            raise ValueError(f"Checkpoint path {checkpoints!r} does not exist.")
        if not glob.glob(os.path.join(checkpoints, "*")):
            raise ValueError(f"Checkpoint directory {checkpoints!r} is empty.")
        return checkpoints
    items = list(checkpoints)
    if not items:
        raise ValueError("No checkpoints were given; TracIn needs at least one.")
    missing = [c for c in items if isinstance(c, str) and not os.path.isfile(c)]
    if missing:
        raise ValueError(f"Checkpoint file(s) not found: {missing}.")
    return items
