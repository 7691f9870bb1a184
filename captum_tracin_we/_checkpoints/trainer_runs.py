#!/usr/bin/env python3

r"""
Reading ``transformers.Trainer`` output folders: the checkpoint folders in
step order, their weights, and each one's learning rate. Public through
:mod:`captum_tracin_we.hf`.
"""

import json
import os
import re
from typing import Any, Dict, List, Optional

import torch
from torch.nn import Module

from captum_tracin_we._checkpoints.state_dict_loaders import state_dict_loader
from captum_tracin_we._errors import CheckpointError

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
RATE_FILE = "tracin_we_learning_rate.json"
STATE_FILE = "trainer_state.json"


def is_checkpoint_folder(path: str) -> bool:
    r"""True for a folder holding model weights (whole or sharded)."""
    return os.path.isdir(path) and any(
        os.path.isfile(os.path.join(path, name)) for name in _WEIGHTS + _INDEXES
    )


def is_trainer_run(path: str) -> bool:
    r"""True for a folder with ``checkpoint-<step>`` subfolders."""
    return os.path.isdir(path) and any(
        _CHECKPOINT.match(name) and os.path.isdir(os.path.join(path, name))
        for name in os.listdir(path)
    )


def trainer_checkpoints(run_dir: str) -> List[str]:
    r"""
    The ``checkpoint-<step>`` folders of a Trainer output folder, in step order.

    Args:
        run_dir (str): The Trainer's ``output_dir``.

    Returns:
        folders (list of str): Checkpoint folders, by increasing step.

    Raises:
        CheckpointError: If the folder has no ``checkpoint-<step>`` subfolder, or
                    holds checkpoints of more than one run.
    """
    steps = []
    for name in os.listdir(run_dir) if os.path.isdir(run_dir) else []:
        match = _CHECKPOINT.match(name)
        if match and os.path.isdir(os.path.join(run_dir, name)):
            steps.append((int(match.group(1)), os.path.join(run_dir, name)))
    if not steps:
        raise CheckpointError(
            f"{run_dir!r} has no 'checkpoint-<step>' folders; pass a Trainer output "
            "folder saved with save_strategy='steps' or 'epoch'."
        )
    folders = [path for _, path in sorted(steps)]
    check_one_run(folders)
    return folders


def trainer_learning_rate(checkpoint_dir: str) -> float:
    r"""
    The learning rate of the optimizer step that produced a Trainer checkpoint.

    Read from :data:`RATE_FILE` when :class:`LearningRateCallback` wrote it,
    else from ``trainer_state.json``: the ``learning_rate`` logged at exactly
    the checkpoint's ``global_step`` (Trainer logs the rate it used for that
    step from transformers 4.51 on; earlier versions logged the next step's
    rate, so their logs are refused).

    Raises:
        CheckpointError: If no rate was recorded, none was logged at the
                    checkpoint's own step, or an older transformers wrote it.
    """
    recorded = os.path.join(checkpoint_dir, RATE_FILE)
    if os.path.isfile(recorded):
        return _recorded_rate(recorded, checkpoint_dir)
    state_path = os.path.join(checkpoint_dir, STATE_FILE)
    if not os.path.isfile(state_path):
        raise CheckpointError(
            f"Checkpoint folder {checkpoint_dir!r} has no {STATE_FILE}, so its "
            "learning rate is unknown. Pass the Trainer's checkpoint-<step> folders, "
            "train with captum_tracin_we.hf.LearningRateCallback(), or pass a "
            "`checkpoints_load_func` that returns the rate."
        )
    _check_logging_version(checkpoint_dir)
    state = _trainer_state(state_path)
    if "global_step" not in state:
        raise _malformed(state_path, "has no 'global_step'")
    step = _step(state["global_step"], state_path, "'global_step'")
    logged = [
        entry
        for i, entry in enumerate(_log_history(state, state_path))
        if "learning_rate" in entry
        and _step(entry.get("step", -1), state_path, f"log_history[{i}]['step']")
        == step
    ]
    if not logged:
        raise CheckpointError(
            f"{state_path!r} logs no learning rate at step {step}, the step this "
            "checkpoint was saved at (a rate logged earlier may differ: schedulers "
            "change it every step). Train with "
            "Trainer(..., callbacks=[captum_tracin_we.hf.LearningRateCallback()]), "
            "which records the rate at every save, or log at every saved step "
            "(save_steps a multiple of logging_steps, and the last step too), or "
            "pass the rates with a `checkpoints_load_func`."
        )
    return _checked_rate(
        logged[-1]["learning_rate"],
        checkpoint_dir,
        f"{state_path!r} (log_history at step {step})",
    )


def _recorded_rate(path: str, checkpoint_dir: str) -> float:
    r"""The rate :class:`LearningRateCallback` wrote, checked like a user's."""
    record = _read_json(path)
    if not isinstance(record, dict) or "learning_rate" not in record:
        raise CheckpointError(
            f"{path!r}, the learning-rate record of checkpoint {checkpoint_dir!r}, "
            f'holds {_summary(record)}, not {{"learning_rate": <float>}}. Delete '
            f"it to read the rate from {STATE_FILE}, or write the rate of the step "
            "that produced this checkpoint there."
        )
    return _checked_rate(record["learning_rate"], checkpoint_dir, repr(path))


def _checked_rate(value: Any, checkpoint_dir: str, source: str) -> float:
    from captum_tracin_we._checkpoints.checkpoints import checked_learning_rate

    return checked_learning_rate(value, checkpoint_dir, source)


def _trainer_state(path: str) -> Dict[str, Any]:
    r"""A ``trainer_state.json``: a JSON object, or a clear error."""
    state = _read_json(path)
    if not isinstance(state, dict):
        raise _malformed(path, f"holds {_summary(state)}, not a JSON object")
    return state


def _log_history(state: Dict[str, Any], path: str) -> List[Dict[str, Any]]:
    r"""The ``log_history`` of a Trainer state: a list of JSON objects."""
    history = state.get("log_history", [])
    if not isinstance(history, list):
        raise _malformed(
            path, f"has a 'log_history' of {_summary(history)}, not a list"
        )
    for i, entry in enumerate(history):
        if not isinstance(entry, dict):
            raise _malformed(path, f"has log_history[{i}] = {_summary(entry)}")
    return history


def _step(value: Any, path: str, what: str) -> int:
    r"""A step number read from a Trainer state: an int (or integral float)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _malformed(path, f"has {what} = {_summary(value)}, not a step number")
    return value


def _summary(value: Any) -> str:
    text = json.dumps(value) if _is_json(value) else repr(value)
    return f"{text[:60]}{'...' if len(text) > 60 else ''} (a {type(value).__name__})"


def _is_json(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def _malformed(path: str, problem: str) -> CheckpointError:
    return CheckpointError(
        f"{path!r} (checkpoint {os.path.dirname(path)!r}) {problem}: it is not a "
        "Trainer state as transformers writes it. Restore it from a copy of the "
        "run, leave that checkpoint out, or pass the rates with a "
        "`checkpoints_load_func`."
    )


def _check_logging_version(checkpoint_dir: str) -> None:
    r"""Refuses logs of transformers < 4.51, which logged the next step's rate."""
    config_path = os.path.join(checkpoint_dir, "config.json")
    if not os.path.isfile(config_path):
        return
    config = _read_json(config_path)
    version = (
        str(config.get("transformers_version", "")) if isinstance(config, dict) else ""
    )
    parts = [int(p) for p in version.split(".")[:2] if p.isdigit()]
    if len(parts) == 2 and tuple(parts) < (4, 51):
        raise CheckpointError(
            f"{checkpoint_dir!r} was written by transformers {version}, whose Trainer "
            "logged the learning rate of the step after the one it logged, so "
            "trainer_state.json cannot tell this checkpoint's rate. Train with "
            "captum_tracin_we.hf.LearningRateCallback() (or transformers >= 4.51), "
            "or pass the rates with a `checkpoints_load_func`."
        )


def check_one_run(checkpoints: List[str]) -> None:
    r"""
    Checks that a folder's checkpoints come from one run: each checkpoint's
    logged history must start with the previous checkpoint's (a folder reused
    for a second run holds checkpoints of both).

    Raises:
        CheckpointError: Naming the first checkpoint of another run.
    """
    previous: Optional[List[Any]] = None
    for checkpoint in checkpoints:
        path = os.path.join(checkpoint, STATE_FILE)
        if not os.path.isfile(path):
            previous = None
            continue
        history = _log_history(_trainer_state(path), path)
        if previous is not None and history[: len(previous)] != previous:
            raise CheckpointError(
                f"{checkpoint!r} is not from the same training run as the checkpoints "
                "before it (its logged history differs): the output folder was used "
                "for more than one run. Use the checkpoints of one run: a fresh "
                "output_dir per run, or pass the list of checkpoint folders."
            )
        previous = history


@state_dict_loader
def load_trainer_checkpoint(model: Module, checkpoint_dir: str) -> float:
    r"""
    Loads a Trainer (or ``save_pretrained``) checkpoint folder into ``model``
    and returns its learning rate (see :func:`trainer_learning_rate`).

    Weights come from ``model.safetensors``, else ``pytorch_model.bin`` loaded
    with ``weights_only=True``. Keys the folder omits because the model ties
    them to other weights are allowed; any other missing or unexpected key is
    an error.

    Raises:
        CheckpointError: If the folder has no weights, they do not fit the
                    model, or the rate is unknown.
    """
    rate = trainer_learning_rate(checkpoint_dir)
    load_weights(model, checkpoint_dir)
    return rate


def load_weights(model: Module, folder: str) -> None:
    r"""
    Loads the weights of a Hugging Face model folder into ``model``; keys the
    folder omits because the model ties them to other weights are allowed.

    Raises:
        CheckpointError: If the weights do not fit the model.
    """
    state_dict = read_weights(folder)
    try:
        result = model.load_state_dict(state_dict, strict=False)
    except RuntimeError as error:
        raise CheckpointError(
            f"Checkpoint {folder!r} does not fit the model: {str(error)[:400]}"
        ) from None
    tied = _tied_keys(model)
    missing = [key for key in result.missing_keys if key not in tied]
    if missing or result.unexpected_keys:
        raise CheckpointError(
            f"Checkpoint {folder!r} does not fit the model: missing "
            f"{missing[:5]}, unexpected {list(result.unexpected_keys)[:5]}. Load the "
            "model class the run trained (AutoModelForSequenceClassification."
            "from_pretrained(<a checkpoint folder>))."
        )


def read_weights(folder: str) -> Dict[str, torch.Tensor]:
    r"""The state dict saved in a Hugging Face model folder (whole or sharded)."""
    for index_name in _INDEXES:
        index_path = os.path.join(folder, index_name)
        if os.path.isfile(index_path):
            index = _read_json(index_path)
            weight_map = index.get("weight_map") if isinstance(index, dict) else None
            if not isinstance(weight_map, dict):
                raise CheckpointError(
                    f"{index_path!r} has no 'weight_map' object naming the shards; "
                    "restore the index as save_pretrained wrote it."
                )
            shards = sorted(set(str(name) for name in weight_map.values()))
            state: Dict[str, torch.Tensor] = {}
            for shard in shards:
                if os.path.basename(shard) != shard:
                    raise CheckpointError(f"{index_path!r} names a shard outside it.")
                state.update(_read_file(os.path.join(folder, shard)))
            return state
    return _read_file(os.path.join(folder, "model.safetensors"), folder)


def _read_file(path: str, folder: Optional[str] = None) -> Dict[str, torch.Tensor]:
    r"""One safetensors or torch weights file (for a folder: either name)."""
    if folder is not None and not os.path.isfile(path):
        path = os.path.join(folder, "pytorch_model.bin")
        if not os.path.isfile(path):
            raise CheckpointError(
                f"Checkpoint folder {folder!r} has no model weights "
                "(model.safetensors, pytorch_model.bin, or their sharded index)."
            )
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        try:
            return load_file(path, device="cpu")
        except Exception as error:  # safetensors raises its own error types
            raise CheckpointError(
                f"Cannot read {path!r}: {type(error).__name__}: {str(error)[:200]}."
            ) from None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise CheckpointError(
            f"Cannot read {path!r} with torch.load(weights_only=True): "
            f"{type(error).__name__}: {str(error)[:200]}."
        ) from None


def _tied_keys(model: Module) -> set:
    keys = getattr(model, "_tied_weights_keys", None) or []
    if isinstance(keys, dict):
        keys = list(keys)
    return set(keys) | set(getattr(model, "all_tied_weights_keys", None) or [])


def _read_json(path: str) -> Any:
    r"""
    The JSON value of a file of a checkpoint folder.

    Raises:
        CheckpointError: If the file cannot be read or is not JSON (a damaged
                    or truncated file), naming it, its checkpoint and the fix.
    """
    try:
        with open(path, encoding="utf-8") as stream:
            return json.load(stream)
    except (OSError, ValueError, RecursionError) as error:  # JSONDecodeError too
        raise CheckpointError(
            f"Cannot read {path!r} (checkpoint {os.path.dirname(path)!r}) as JSON "
            f"({type(error).__name__}: {str(error)[:120]}): the file is damaged or "
            "truncated, for example by a full disk or an interrupted save. Restore "
            "it from a copy of the run, or leave that checkpoint out (pass the list "
            "of the other checkpoint folders)."
        ) from None
