#!/usr/bin/env python3

r"""
A user's fine-tuned model as it lies on disk: a ``transformers.Trainer``
output folder (``checkpoint-<step>`` folders and, usually, the final model) or
a ``save_pretrained`` folder, with its tokenizer.
"""

import json
import os
from dataclasses import dataclass
from typing import Any, Callable, List, Optional

from torch.nn import Module

from captum_tracin_we._checkpoints import trainer_runs
from captum_tracin_we._checkpoints.state_dict_loaders import state_dict_loader
from captum_tracin_we._errors import CheckpointError
from captum_tracin_we._files.atomic_files import write_files


@dataclass
class ModelFolder:
    r"""
    What ``explain`` needs from a model folder.

    Attributes:
        model (torch.nn.Module): The final model, in eval mode.
        tokenizer: Its tokenizer.
        checkpoints (list of str): Checkpoint folders, in step order.
        load_func (Callable): Loads one into the model, returns its rate.
        description (str): One line for reports: what was read.
        training_length (int, optional): The token limit the run was trained
                    at, where the run records it (:data:`TRAINING_RECORD`,
                    written by ``captum-tracin-we demo``); None if unknown.
    """

    model: Module
    tokenizer: Any
    checkpoints: List[str]
    load_func: Callable[[Module, str], float]
    description: str
    training_length: Optional[int] = None


# A run's record of how its texts were tokenized for training.
TRAINING_RECORD = "tracin_we_training.json"


def write_training_record(run_dir: str, max_length: int) -> None:
    r"""Records in ``run_dir`` the token limit its training texts were cut at."""
    record = {"written_by": "captum-tracin-we", "max_length": int(max_length)}
    write_files({os.path.join(run_dir, TRAINING_RECORD): json.dumps(record)})


def training_length(path: str) -> Optional[int]:
    r"""
    The token limit recorded in ``path``'s :data:`TRAINING_RECORD`, or None
    if there is no record.

    Raises:
        CheckpointError: If the record is there but unreadable or invalid.
    """
    record_path = os.path.join(path, TRAINING_RECORD)
    if not os.path.isfile(record_path):
        return None
    try:
        with open(record_path, encoding="utf-8") as stream:
            length = json.load(stream).get("max_length")
    except (OSError, ValueError, AttributeError):
        length = None
    if isinstance(length, bool) or not isinstance(length, int) or length < 2:
        raise CheckpointError(
            f"{record_path!r} does not hold a valid training length "
            '({"max_length": <int >= 2>}); delete it, or pass --max-length.'
        )
    return length


def load_model_folder(
    path: str, show_progress: bool = True, causal_lm: bool = False
) -> ModelFolder:
    r"""
    Loads the model and tokenizer of a Trainer run or model folder
    (transformers' loading bar only with ``show_progress``).

    A Trainer run gives its ``checkpoint-<step>`` folders with their learning
    rates; the final model is the top-level one if saved, else the last
    checkpoint. A plain model folder is its own single checkpoint with
    learning rate 1.0 (scores then rank examples, unscaled).

    With ``causal_lm`` the model is loaded as ``AutoModelForCausalLM``, else
    as a sequence classifier.

    Raises:
        CheckpointError: If the folder holds no model, or no tokenizer.
    """
    if not os.path.isdir(path):
        raise CheckpointError(f"Model folder {path!r} does not exist.")
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification
    from transformers.utils import logging

    auto = AutoModelForCausalLM if causal_lm else AutoModelForSequenceClassification
    kind = "a causal language model" if causal_lm else "a sequence classifier"

    logging.set_verbosity_error()
    if trainer_runs.is_trainer_run(path):
        checkpoints = trainer_runs.trainer_checkpoints(path)
        final = path if trainer_runs.is_checkpoint_folder(path) else checkpoints[-1]
        load_func = trainer_runs.load_trainer_checkpoint
        description = (
            f"Trainer run {path} ({len(checkpoints)} checkpoints: "
            f"{', '.join(os.path.basename(c) for c in checkpoints)})"
        )
    elif trainer_runs.is_checkpoint_folder(path) and os.path.isfile(
        os.path.join(path, trainer_runs.STATE_FILE)
    ):
        checkpoints, final, load_func = (
            [path],
            path,
            trainer_runs.load_trainer_checkpoint,
        )
        description = f"Trainer checkpoint {path} (one checkpoint, its logged rate)"
    elif trainer_runs.is_checkpoint_folder(path):
        checkpoints, final, load_func = [path], path, _load_with_unit_rate
        description = (
            f"model folder {path} (one checkpoint, learning rate 1.0: scores rank "
            "the training examples but are not scaled by a learning rate)"
        )
    else:
        raise CheckpointError(
            f"{path!r} holds neither a model (model.safetensors or "
            "pytorch_model.bin) nor Trainer checkpoint-<step> folders. Pass the "
            "folder given to Trainer(args=TrainingArguments(output_dir=...)) or to "
            "model.save_pretrained(...)."
        )
    if not os.path.isfile(os.path.join(final, "config.json")):
        raise CheckpointError(
            f"{final!r} has no config.json; save the model with "
            "model.save_pretrained(folder), which writes it."
        )
    tokenizer = _tokenizer(path, final, checkpoints)
    bars_were_off = logging.is_progress_bar_enabled() is False
    if not show_progress:
        logging.disable_progress_bar()
    try:
        model = auto.from_pretrained(final, local_files_only=True).eval()
    except Exception as error:  # transformers and safetensors raise many types
        raise CheckpointError(
            f"Cannot load the model in {final!r} as {kind}: "
            f"{type(error).__name__}: {str(error)[:300]}"
        ) from None
    finally:
        if not show_progress and not bars_were_off:
            logging.enable_progress_bar()
    length = training_length(path)
    return ModelFolder(model, tokenizer, checkpoints, load_func, description, length)


@state_dict_loader
def _load_with_unit_rate(model: Module, folder: str) -> float:
    trainer_runs.load_weights(model, folder)
    return 1.0


_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "vocab.json",
    "spiece.model",
    "sentencepiece.bpe.model",
)


def _tokenizer(*folders: Any) -> Any:
    from transformers import AutoTokenizer

    tried: List[str] = []
    for folder in folders:
        for candidate in folder if isinstance(folder, list) else [folder]:
            if candidate in tried:
                continue
            tried.append(candidate)
            if not any(
                os.path.isfile(os.path.join(candidate, name))
                for name in _TOKENIZER_FILES
            ):
                continue  # transformers would build an empty tokenizer here
            try:
                return AutoTokenizer.from_pretrained(candidate, local_files_only=True)
            except (OSError, ValueError, TypeError):
                continue
    raise CheckpointError(
        f"No tokenizer in {tried[0]!r} or its checkpoints. Save it next to the "
        "model with tokenizer.save_pretrained(folder), or pass "
        "Trainer(processing_class=tokenizer) so that every checkpoint has it."
    )


def model_token_limit(model: Any, tokenizer: Any) -> int:
    r"""The most tokens the model can take: its position embeddings or the
    tokenizer's ``model_max_length``, whichever is smaller (512 if neither)."""
    limits = [model_positions(model), getattr(tokenizer, "model_max_length", None)]
    usable = [int(v) for v in limits if isinstance(v, int) and 0 < v < 100_000]
    return min(usable) if usable else 512


def model_positions(model: Any) -> Optional[int]:
    r"""The tokens the model's position embeddings cover, if it says."""
    config = getattr(model, "config", None)
    positions = getattr(config, "max_position_embeddings", None)
    if isinstance(positions, int) and "roberta" in str(config.model_type):
        positions -= int(config.pad_token_id or 0) + 1  # positions start after pad
    return positions if isinstance(positions, int) else None
