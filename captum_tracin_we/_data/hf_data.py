#!/usr/bin/env python3

r"""Tokenized ``datasets.Dataset`` objects as TracIn-WE data (no import of
``datasets`` needed: it is recognised by its interface)."""

from typing import Any, Dict, List

import torch
from torch.utils.data import DataLoader


def is_hf_dataset(data: Any) -> bool:
    r"""True for a ``datasets.Dataset`` (duck-typed, without importing it)."""
    return hasattr(data, "column_names") and hasattr(data, "with_format")


def dataset_loader(dataset: Any, batch_size: int, pad_id: int) -> DataLoader:
    r"""
    A DataLoader over a tokenized ``datasets.Dataset`` (columns ``input_ids``,
    optionally ``attention_mask`` and ``token_type_ids``, and ``label`` or
    ``labels``), padded per batch, in the dataset's order.

    Raises:
        ValueError: If a needed column is missing.
    """
    if isinstance(dataset.column_names, dict):
        raise ValueError(
            f"A DatasetDict (splits {list(dataset.column_names)}) was given; pass one "
            "split, for example dataset['train']."
        )
    if not hasattr(dataset, "__getitem__") or type(dataset).__name__.startswith(
        "Iterable"
    ):
        raise ValueError(
            "A streaming datasets.IterableDataset was given; TracIn-WE reads the data "
            "once per checkpoint and by index. Load it as a Dataset (streaming=False)."
        )
    columns = list(dataset.column_names)
    label = "labels" if "labels" in columns else "label" if "label" in columns else None
    if label is None and "input_ids" in columns:
        raise ValueError(
            f"The datasets.Dataset has no 'label' or 'labels' column (columns: "
            f"{columns}); add the class ids of the examples."
        )
    if "input_ids" not in columns or label is None:
        raise ValueError(
            "A datasets.Dataset needs the columns 'input_ids' and 'label' (or "
            f"'labels'); it has {columns}. Tokenize it first, e.g. "
            "dataset.map(lambda rows: tokenizer(rows['text'], truncation=True), "
            "batched=True)."
        )
    dtype = getattr(dataset.features.get(label), "dtype", "int64")
    if dtype in ("string", "large_string"):
        raise ValueError(
            f"The {label!r} column holds text labels; TracIn-WE needs class ids. Map "
            "them with the model's config.label2id, e.g. dataset.map(lambda row: "
            "{'label': model.config.label2id[row['label']]})."
        )
    keep = [
        c for c in ("input_ids", "attention_mask", "token_type_ids") if c in columns
    ]
    keep.append(label)
    formatted = dataset.with_format("torch", columns=keep)
    return DataLoader(
        formatted, batch_size=batch_size, collate_fn=_PadCollator(pad_id, label)
    )


class _PadCollator:
    r"""Pads the id columns of a list of examples to the batch's longest."""

    def __init__(self, pad_id: int, label: str) -> None:
        self.pad_id = pad_id
        self.label = label

    def __call__(self, rows: List[Dict[str, torch.Tensor]]) -> Dict[str, torch.Tensor]:
        from torch.nn.utils.rnn import pad_sequence

        batch = {}
        for key in rows[0]:
            values = [row[key] for row in rows]
            if key == self.label:
                batch["labels"] = torch.stack([torch.as_tensor(v) for v in values])
                continue
            value = self.pad_id if key == "input_ids" else 0
            batch[key] = pad_sequence(values, batch_first=True, padding_value=value)
        if "attention_mask" not in batch:
            lengths = torch.tensor([len(row["input_ids"]) for row in rows])
            positions = torch.arange(batch["input_ids"].shape[1])
            batch["attention_mask"] = (positions < lengths[:, None]).long()
        return batch
