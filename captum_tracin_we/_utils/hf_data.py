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
    columns = list(dataset.column_names)
    label = "labels" if "labels" in columns else "label" if "label" in columns else None
    if "input_ids" not in columns or label is None:
        raise ValueError(
            "A datasets.Dataset needs the columns 'input_ids' and 'label' (or "
            f"'labels'); it has {columns}. Tokenize it first, e.g. "
            "dataset.map(lambda rows: tokenizer(rows['text'], truncation=True), "
            "batched=True)."
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
