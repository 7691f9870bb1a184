#!/usr/bin/env python3

r"""Label names and ids: a user's labels (text or integers) mapped through the
model's ``config.label2id``."""

import numbers
import re
from typing import Any, Dict, List, Optional, Sequence, Tuple

_DEFAULT_NAME = re.compile(r"^LABEL_\d+$")


class LabelError(ValueError):
    r"""Labels that do not fit the model."""


def model_label_names(config: Any, num_labels: int) -> List[str]:
    r"""
    The model's label names by id: ``config.id2label``, else the inverse of
    ``config.label2id``, else ``"0"``, ``"1"``... (for the default
    ``LABEL_<i>`` names).
    """
    id2label = getattr(config, "id2label", None) or {}
    names = [str(id2label.get(i, id2label.get(str(i), i))) for i in range(num_labels)]
    if not all(_DEFAULT_NAME.match(name) for name in names):
        return names
    label2id = getattr(config, "label2id", None) or {}
    inverse = {int(i): str(name) for name, i in label2id.items()}
    names = [inverse.get(i, f"LABEL_{i}") for i in range(num_labels)]
    if not all(_DEFAULT_NAME.match(name) for name in names):
        return names
    return [str(i) for i in range(num_labels)]


def label_ids(labels: Sequence[Any], names: Sequence[str], source: str) -> List[int]:
    r"""
    Maps raw labels to class ids: a label equal to a name takes its id; an
    integer (or integer text such as ``"1"``) is taken as the id itself.

    Args:
        labels (sequence): Raw labels, as read from the data.
        names (sequence of str): The model's label names by id.
        source (str): Where the labels come from, for messages.

    Returns:
        ids (list of int): One class id per label.

    Raises:
        LabelError: Naming the unknown labels and the known names.
    """
    by_name: Dict[str, int] = {name: i for i, name in enumerate(names)}
    ids, unknown = [], []
    for label in labels:
        value = _label_id(label, by_name, len(names))
        if value is None:
            unknown.append(label)
        ids.append(value if value is not None else -1)
    if unknown:
        shown = sorted({str(label) for label in unknown})[:10]
        raise LabelError(
            f"{source} has labels the model does not know: {shown}. The model's "
            f"labels are {list(names)} (ids 0..{len(names) - 1}, from the model's "
            "config). Use "
            "those names or ids, or fine-tune a model with these labels."
        )
    return ids


def _label_id(label: Any, by_name: Dict[str, int], count: int) -> Optional[int]:
    r"""
    An integer label (from a datasets folder or JSON) is a class id. A text
    label is a name if the model has that name, else a class id written as
    text (``"1"``, ``"1.0"``, ``"LABEL_1"``).
    """
    if isinstance(label, bool):
        return None
    if isinstance(label, numbers.Integral):
        return int(label) if 0 <= int(label) < count else None
    text = str(label).strip()
    if text in by_name:
        return by_name[text]
    match = re.fullmatch(r"(?:LABEL_)?(-?\d+)(?:\.0+)?", text)
    if match:
        value = int(match.group(1))
        return value if 0 <= value < count else None
    return None


def names_from_data(labels: Sequence[Any]) -> Tuple[List[str], List[int]]:
    r"""
    Label names and ids for training a new model: integer labels keep their
    values (names ``"0"``, ``"1"``...), text labels are numbered in sorted order.
    """
    texts = [str(label).strip() for label in labels]
    if all(re.fullmatch(r"\d+", text) for text in texts):
        values = [int(text) for text in texts]
        return [str(i) for i in range(max(values) + 1)], values
    names = sorted(set(texts))
    index = {name: i for i, name in enumerate(names)}
    return names, [index[text] for text in texts]
