#!/usr/bin/env python3

r"""
Reading a user's text data: CSV, JSON Lines, or a ``datasets`` folder saved
with ``save_to_disk``, with a text column and an optional label column. Every
problem is reported with the file's name and the fix.
"""

import csv
import json
import os
from dataclasses import dataclass
from typing import Any, List, Optional

from captum_tracin_we._errors import TracInWEError


class DataFileError(TracInWEError):
    r"""A data file that cannot be read as texts and labels."""


@dataclass
class TextData:
    r"""
    Texts and their raw labels, in the file's row order.

    Attributes:
        texts (list of str): One text per row.
        labels (list, optional): One label per row (str or int), or None when
                    the file has no label column.
        source (str): Where the rows came from.
    """

    texts: List[str]
    labels: Optional[List[Any]]
    source: str

    def __len__(self) -> int:
        return len(self.texts)


def read_text_data(
    path: str,
    text_column: str = "text",
    label_column: Optional[str] = "label",
    require_labels: bool = True,
) -> TextData:
    r"""
    Reads texts and labels from a CSV file, a JSON Lines file (``.jsonl``), or
    a folder written by ``datasets.Dataset.save_to_disk``.

    Args:
        path (str): The file or folder.
        text_column (str, optional): Column of the texts. Default: ``"text"``
        label_column (str, optional): Column of the labels. Default: ``"label"``
        require_labels (bool, optional): Raise if the label column is missing;
                    else such data get ``labels=None``. Default: True

    Returns:
        data (TextData): The rows in file order.

    Raises:
        DataFileError: For a missing or empty file, a missing column, a
                    column named twice (a CSV header or a JSON line), an empty
                    text, or a file that is not valid UTF-8.
    """
    if not os.path.exists(path):
        raise DataFileError(f"Data file {path!r} does not exist.")
    extension = os.path.splitext(path)[1].lower()
    if os.path.isdir(path):
        rows, columns = _dataset_rows(path)
    elif extension in (".jsonl", ".json", ".ndjson"):
        rows, columns = _jsonl_rows(path)
    else:
        rows, columns = _csv_rows(path, "\t" if extension == ".tsv" else ",")
    if not rows:
        raise DataFileError(f"{path!r} has no rows; it needs at least one text.")
    if text_column not in columns:
        hint = (
            " The file looks like it has one column only: is it separated by "
            "commas (a .csv), tabs (a .tsv) or one JSON object per line (.jsonl)?"
            if len(columns) == 1
            else ""
        )
        raise DataFileError(
            f"{path!r} has no column {text_column!r} (columns: {columns}); name the "
            f"text column with --text-column.{hint}"
        )
    has_labels = label_column is not None and label_column in columns
    if require_labels and not has_labels:
        raise DataFileError(
            f"{path!r} has no column {label_column!r} (columns: {columns}); name the "
            "label column with --label-column."
        )
    texts = [_text(row.get(text_column), path, i) for i, row in enumerate(rows)]
    labels = [row.get(label_column) for row in rows] if has_labels else None
    if labels is not None:
        missing = [i for i, label in enumerate(labels) if label in (None, "")]
        if missing:
            raise DataFileError(
                f"{path!r} has rows without a label (rows {missing[:5]}, counting "
                "from 0); label every row or drop those rows."
            )
    return TextData(texts, labels, path)


def _text(value: Any, path: str, row: int) -> str:
    if not isinstance(value, str) or not value.strip():
        raise DataFileError(
            f"Row {row} of {path!r} has an empty or missing text; every row needs one."
        )
    return value


def _csv_rows(path: str, delimiter: str) -> "tuple[list, list]":
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            reader = csv.DictReader(handle, delimiter=delimiter)
            _check_header(list(reader.fieldnames or []), path)
            rows = list(reader)
            return rows, list(reader.fieldnames or [])
    except UnicodeDecodeError as error:
        raise DataFileError(_encoding_message(path, error)) from None
    except csv.Error as error:
        raise DataFileError(f"{path!r} is not a valid CSV file: {error}.") from None


def _check_header(columns: List[str], path: str) -> None:
    r"""Refuses a header that names a column twice: ``csv.DictReader`` would
    silently keep the last of them."""
    seen = set()
    for column in columns:
        if column in seen and column.strip():  # unnamed columns are never read
            raise DataFileError(
                f"The header of {path!r} names the column {column!r} more than "
                f"once (columns: {columns}); which one holds the data is "
                "unclear. Rename or remove the repeated column."
            )
        seen.add(column)


def _jsonl_rows(path: str) -> "tuple[list, list]":
    rows = []
    try:
        with open(path, encoding="utf-8-sig") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line, object_pairs_hook=_unique_keys)
                except _RepeatedKey as repeated:
                    raise DataFileError(
                        f"Line {number} of {path!r} names the field "
                        f"{repeated.args[0]!r} more than once; which one holds the "
                        "data is unclear. Write each field once."
                    ) from None
                except json.JSONDecodeError as error:
                    raise DataFileError(
                        f"Line {number} of {path!r} is not valid JSON ({error.msg}); "
                        "a .jsonl file holds one JSON object per line."
                    ) from None
                if not isinstance(row, dict):
                    raise DataFileError(
                        f"Line {number} of {path!r} is not a JSON object."
                    )
                rows.append(row)
    except UnicodeDecodeError as error:
        raise DataFileError(_encoding_message(path, error)) from None
    columns = sorted({key for row in rows for key in row})
    return rows, columns


class _RepeatedKey(Exception):
    r"""A JSON object that names a key twice (``json`` keeps the last)."""


def _unique_keys(pairs: List[Any]) -> dict:
    row = {}
    for key, value in pairs:
        if key in row:
            raise _RepeatedKey(key)
        row[key] = value
    return row


def _dataset_rows(path: str) -> "tuple[list, list]":
    try:
        import datasets
    except ModuleNotFoundError:
        raise DataFileError(
            f"{path!r} is a folder; reading a saved `datasets` folder needs the "
            "`datasets` package: pip install 'captum_tracin_we[hf]'."
        ) from None
    try:
        dataset = datasets.load_from_disk(path)
    except Exception as error:  # datasets raises several types
        raise DataFileError(
            f"{path!r} is not a folder written by Dataset.save_to_disk "
            f"({type(error).__name__}: {str(error)[:200]})."
        ) from None
    if isinstance(dataset, datasets.DatasetDict):
        raise DataFileError(
            f"{path!r} holds a DatasetDict with splits {list(dataset)}; pass the "
            "folder of one split (dataset['train'].save_to_disk(...))."
        )
    return [dict(row) for row in dataset], list(dataset.column_names)


def _encoding_message(path: str, error: UnicodeDecodeError) -> str:
    return (
        f"{path!r} is not valid UTF-8 (byte {error.start}: {error.reason}). Save it "
        "as UTF-8, for example with `iconv -f <its encoding> -t utf-8`."
    )
