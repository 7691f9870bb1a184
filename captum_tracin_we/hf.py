#!/usr/bin/env python3

r"""
Hugging Face integration: read a ``transformers.Trainer`` output folder as it
is, record exact learning rates while training, and use tokenized
``datasets.Dataset`` objects as training and test data.

A Trainer run looks like::

    run/
      checkpoint-50/   model.safetensors (or pytorch_model.bin), config.json,
                       trainer_state.json (log_history with "learning_rate")
      checkpoint-100/  ...

Passing ``run/`` (or one ``checkpoint-*`` folder) as ``checkpoints`` to
:class:`~captum_tracin_we.TracInWE` works with the default loader: the
``checkpoint-*`` folders are taken in step order, the weights are read from
``model.safetensors`` (or from ``pytorch_model.bin`` with
``weights_only=True``), and the learning rate of each checkpoint is the rate of
the optimizer step that produced it: the one recorded by
:class:`LearningRateCallback` if it ran, else the ``learning_rate`` logged at
the checkpoint's own step in its ``trainer_state.json`` (Trainer logs the rate
of the step it logs, before the scheduler moves on). Every rate read from
these files passes the checks of a rate a user passes (a finite number >= 0,
not a string or a boolean); a damaged, truncated or malformed file is a
:class:`~captum_tracin_we.CheckpointError` naming the file and its checkpoint.
"""

import json
import os
from typing import Any, Optional

from captum_tracin_we._utils.hf_data import dataset_loader, is_hf_dataset
from captum_tracin_we._utils.trainer_runs import (
    RATE_FILE,
    STATE_FILE,
    check_one_run,
    is_checkpoint_folder,
    is_trainer_run,
    load_trainer_checkpoint,
    load_weights,
    read_weights,
    trainer_checkpoints,
    trainer_learning_rate,
)

__all__ = [
    "RATE_FILE",
    "STATE_FILE",
    "LearningRateCallback",
    "check_one_run",
    "dataset_loader",
    "is_checkpoint_folder",
    "is_hf_dataset",
    "is_trainer_run",
    "load_trainer_checkpoint",
    "load_weights",
    "read_weights",
    "trainer_checkpoints",
    "trainer_learning_rate",
]


def _trainer_callback_base() -> type:
    from transformers import TrainerCallback

    return TrainerCallback


class LearningRateCallback(_trainer_callback_base()):  # type: ignore[misc]
    r"""
    A ``transformers.TrainerCallback`` that writes, into every
    ``checkpoint-<step>`` folder the Trainer saves, the exact learning rate of
    the optimizer step that produced it (:data:`RATE_FILE`), for runs that log
    rarely.

    Example::

        trainer = Trainer(..., callbacks=[LearningRateCallback()])
    """

    def __init__(self) -> None:
        self.last_rate: Optional[float] = None

    def on_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any):
        optimizer = kwargs.get("optimizer")
        if optimizer is not None:
            self.last_rate = float(optimizer.param_groups[0]["lr"])

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any):
        folder = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
        if self.last_rate is not None and os.path.isdir(folder):
            record = {"step": state.global_step, "learning_rate": self.last_rate}
            _write_whole(os.path.join(folder, RATE_FILE), json.dumps(record))


def _write_whole(path: str, text: str) -> None:
    r"""Writes ``text`` to a temporary file beside ``path``, then renames it into
    place, so that an interrupted save never leaves a truncated file."""
    temporary = f"{path}.{os.getpid()}.tmp"
    try:
        with open(temporary, "w", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
