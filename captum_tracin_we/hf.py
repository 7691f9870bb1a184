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

from captum_tracin_we._checkpoints.learning_rate_callback import (  # split out
    LearningRateCallback,
)
from captum_tracin_we._checkpoints.trainer_runs import (
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
from captum_tracin_we._data.hf_data import dataset_loader, is_hf_dataset
from captum_tracin_we._files.model_folder import ModelFolder, load_model_folder

__all__ = [
    "ModelFolder",
    "load_model_folder",
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
