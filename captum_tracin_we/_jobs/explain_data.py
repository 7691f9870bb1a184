#!/usr/bin/env python3

r"""
The explain job's training data as the model sees it: the model folder and
data loaded, texts tokenized and cut at the length the model was trained at
(which texts were cut is counted and said), and batches made of them.
"""

import os
from dataclasses import dataclass
from typing import Any, Dict, List, Tuple

from torch import Tensor
from torch.utils.data import DataLoader

from captum_tracin_we._errors import TracInWEError
from captum_tracin_we._files.data_files import TextData, read_text_data
from captum_tracin_we._files.labels import label_ids, model_label_names
from captum_tracin_we._files.model_folder import (
    ModelFolder,
    load_model_folder,
    model_positions,
    model_token_limit,
)
from captum_tracin_we._jobs.explain_settings import ExplainSettings


@dataclass
class Encoded:
    r"""Texts tokenized as the model sees them."""

    features: List[Dict[str, Any]]
    truncated: List[bool]
    seen_texts: List[str]


def load_training(
    settings: ExplainSettings,
) -> Tuple[ModelFolder, List[str], TextData, List[int], int, Encoded]:
    r"""
    Loads the model folder and the training data, and tokenizes the data as
    the model sees it (reporting how many texts were cut).

    Returns:
        (folder, label_names, train, train_labels, max_length, encoded)
    """
    for option, path in (("--train", settings.train), ("--test", settings.test)):
        if path and not os.path.exists(path):  # before the model loads
            raise TracInWEError(f"{option} {path!r} does not exist; check the path.")
    train = read_text_data(settings.train, settings.text_column, settings.label_column)
    folder = load_model_folder(settings.model, settings.show_progress)
    names = model_label_names(folder.model.config, folder.model.config.num_labels)
    train_labels = label_ids(train.labels or [], names, repr(settings.train))
    max_length = _max_length(settings, folder)
    encoded = encode(folder.tokenizer, train.texts, train_labels, max_length)
    _report_truncation("training", encoded, max_length)
    return folder, names, train, train_labels, max_length, encoded


def encode(
    tokenizer: Any, texts: List[str], labels: List[int], max_length: int
) -> Encoded:
    r"""
    Tokenizes texts as the model sees them, cut at ``max_length`` tokens, and
    notes which were cut.
    """
    cut = tokenizer(  # a literal "[PAD]" in a text is text, not padding
        texts, truncation=True, max_length=max_length, split_special_tokens=True
    )
    at_limit = [i for i, ids in enumerate(cut["input_ids"]) if len(ids) >= max_length]
    full_lengths = {}
    if at_limit:  # only texts that reach the limit can have been cut
        full = tokenizer(
            [texts[i] for i in at_limit], truncation=False, split_special_tokens=True
        )["input_ids"]
        full_lengths = {i: len(ids) for i, ids in zip(at_limit, full)}
    hidden = set(tokenizer.all_special_ids) - {tokenizer.unk_token_id}
    features, truncated, seen = [], [], []
    for i, ids in enumerate(cut["input_ids"]):
        features.append(
            {
                "input_ids": ids,
                "attention_mask": cut["attention_mask"][i],
                "labels": labels[i],
            }
        )
        truncated.append(full_lengths.get(i, len(ids)) > len(ids))
        seen.append(tokenizer.decode([t for t in ids if t not in hidden]))
    return Encoded(features, truncated, seen)


def _max_length(settings: ExplainSettings, folder: ModelFolder) -> int:
    r"""``--max-length``, or the most the model can take."""
    positions = model_positions(folder.model)
    if settings.max_length is not None:
        if settings.max_length < 2:
            raise ValueError(f"--max-length must be >= 2; got {settings.max_length}.")
        if isinstance(positions, int) and settings.max_length > positions:
            raise ValueError(
                f"--max-length {settings.max_length} is more than the model's "
                f"{positions} positions; use --max-length {positions} or less."
            )
        return settings.max_length
    if folder.training_length is not None:
        return min(
            folder.training_length, model_token_limit(folder.model, folder.tokenizer)
        )
    limit = model_token_limit(folder.model, folder.tokenizer)
    print(
        f"The run does not record the token limit it was trained at; texts are cut "
        f"at the model's limit, {limit} tokens. Pass --max-length if training used "
        "fewer."
    )
    return limit


def max_length_note(settings: ExplainSettings, folder: ModelFolder, length: int) -> str:
    r"""The report's "Max length" row: the limit and where it came from."""
    if settings.max_length is not None:
        return f"{length} tokens (--max-length)"
    if folder.training_length is not None:
        return f"{length} tokens (the training length the run records)"
    return (
        f"{length} tokens (the model's limit: the run does not record the length "
        "it was trained at; pass --max-length if it was shorter)"
    )


def _report_truncation(what: str, encoded: Encoded, max_length: int) -> None:
    count = sum(encoded.truncated)
    if count:
        print(
            f"{count} of {len(encoded.truncated)} {what} texts are longer than "
            f"{max_length} tokens and were truncated to what the model sees "
            "(--max-length sets the limit)."
        )


def _collate(tokenizer: Any, features: List[Dict[str, Any]]) -> Dict[str, Tensor]:
    from transformers import DataCollatorWithPadding

    return dict(DataCollatorWithPadding(tokenizer)(features))


def _loader(tokenizer: Any, encoded: Encoded, batch_size: int) -> DataLoader:
    from transformers import DataCollatorWithPadding

    return DataLoader(
        encoded.features,
        batch_size=batch_size,
        collate_fn=DataCollatorWithPadding(tokenizer),
    )
