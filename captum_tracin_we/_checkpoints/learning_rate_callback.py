#!/usr/bin/env python3

r"""A Trainer callback that records the exact learning rate of every checkpoint."""

import json
import os
from typing import Any, Optional

from captum_tracin_we._checkpoints.trainer_runs import (
    RATE_FILE,
)


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
