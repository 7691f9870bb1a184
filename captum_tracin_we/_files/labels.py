#!/usr/bin/env python3

r"""Label names and ids: a user's labels (names, or ids as numbers) mapped to
class ids by one rule for every file format (see :func:`label_ids`)."""

import math
import numbers
import re
from typing import Any, Dict, List, Optional, Sequence, Tuple

from captum_tracin_we._errors import TracInWEError

_DEFAULT_NAME = re.compile(r"^LABEL_(\d+)$")
_INTEGER = re.compile(r"[+-]?\d+")
_DECIMAL = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


class LabelError(TracInWEError):
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
    Maps raw labels to class ids by one rule, whatever the file format:

    - A *number*, that is an integer or a float with an integral value (JSON
      ``1`` or ``1.0``, a ``datasets`` integer or float column) or text that
      writes one (``"1"``, ``"1.0"``, ``" 1 "``), is the class id itself.
    - Text ``LABEL_<id>`` (Hugging Face's default names) is the class id.
    - Any other text is a label name, looked up in ``names``.

    Where a label name is itself a number other than its own id (star ratings
    ``"1".."5"`` at ids 0..4), a number could mean either, so numbers are
    refused (and ``LABEL_<id>`` likewise if a name ``LABEL_<j>`` sits at another
    id). Names ``"0".."n-1"`` in order agree with the ids, so every form works.

    Args:
        labels (sequence): Raw labels, as read from the data.
        names (sequence of str): The model's label names by id.
        source (str): Where the labels come from, for messages.

    Returns:
        ids (list of int): One class id per label.

    Raises:
        LabelError: Naming the unknown labels and the known names, or, for
                    numbers that could be a name or an id, the names that make
                    them ambiguous and the two fixes.
    """
    by_name: Dict[str, int] = {name: i for i, name in enumerate(names)}
    clashes = {
        kind: [(name, i) for i, name in enumerate(names) if read(name) not in (None, i)]
        for kind, read in (("number", _number), ("LABEL_", _default_name_id))
    }
    ids, unknown, ambiguous = [], [], []
    for label in labels:
        kind, value = _label_id(label, by_name)
        if kind is not None and clashes[kind]:
            ambiguous.append(label)
            value = None
        elif value is None or not 0 <= value < len(names):
            unknown.append(label)
            value = None
        ids.append(value if value is not None else -1)
    if ambiguous:
        kind = "number" if _label_id(ambiguous[0], by_name)[0] == "number" else "LABEL_"
        raise LabelError(_ambiguous_message(source, ambiguous, names, clashes[kind]))
    if unknown:
        shown = sorted({str(label) for label in unknown})[:10]
        raise LabelError(
            f"{source} has labels the model does not know: {shown}. The model's "
            f"labels are {list(names)} (ids 0..{len(names) - 1}, from the model's "
            "config). Use those names, or the ids as numbers or LABEL_<id>, or "
            "fine-tune a model with these labels."
        )
    return ids


def _label_id(label: Any, by_name: Dict[str, int]) -> Tuple[Optional[str], Any]:
    r"""
    ``("number", id)`` for a number, ``("LABEL_", id)`` for ``LABEL_<id>``,
    ``(None, id)`` for a label name (``id`` None if the model has no such
    name or the label is a boolean).
    """
    if isinstance(label, bool):
        return None, None
    number = _number(label)
    if number is not None:
        return "number", number
    default = _default_name_id(label)
    if default is not None:
        return "LABEL_", default
    return None, by_name.get(str(label).strip())


def _number(value: Any) -> Optional[int]:
    r"""The integer that ``value`` is or writes (``1``, ``1.0``, ``"1"``,
    ``"1.0"``, ``"1e0"``), or None (booleans, other text, fractions)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        if _INTEGER.fullmatch(text):
            return int(text)
        if not _DECIMAL.fullmatch(text):
            return None
        value = float(text)
    if isinstance(value, numbers.Real) and math.isfinite(value):
        return int(value) if float(value).is_integer() else None
    return None


def _default_name_id(value: Any) -> Optional[int]:
    match = _DEFAULT_NAME.match(value.strip()) if isinstance(value, str) else None
    return int(match.group(1)) if match else None


def _ambiguous_message(
    source: str,
    ambiguous: Sequence[Any],
    names: Sequence[str],
    clashes: Sequence[Tuple[str, int]],
) -> str:
    shown = sorted({repr(label) for label in ambiguous})[:5]
    name, i = clashes[0]
    renamed = {str(j): f"class {n}" for n, j in clashes[:2]}
    return (
        f"{source} gives labels as numbers ({', '.join(shown)}), but the model's "
        f"label names {list(names)} hold numbers that differ from their ids (name "
        f"{name!r} is id {i}), so {ambiguous[0]!r} could mean the name or the id. "
        "Rename the labels in the model's config.json so that no name is a number "
        f"(id2label, e.g. {renamed}..., and label2id to match), and write the data "
        "with those names; or keep the model and write each label as its id in "
        f"the form LABEL_<id> (LABEL_{i} for the name {name!r})."
    )


def names_from_data(labels: Sequence[Any]) -> Tuple[List[str], List[int]]:
    r"""
    Label names and ids for training a new model, by the rule of
    :func:`label_ids`: numbers (``1``, ``"1"``, ``"1.0"``) are ids (names
    ``"0"``, ``"1"``...), text labels are names numbered in sorted order.

    Raises:
        LabelError: For labels that mix numbers and names, or negative ids.
    """
    values = [_number(label) for label in labels]
    if all(value is not None for value in values):
        if min(values) < 0:
            raise LabelError(
                f"Label ids must be 0 or more; the data has {min(values)}. Number "
                "the classes from 0, or give them names."
            )
        return [str(i) for i in range(max(values) + 1)], list(values)
    if any(value is not None for value in values):
        mixed = sorted({str(label).strip() for label in labels})[:10]
        raise LabelError(
            f"The labels mix numbers and names ({mixed}); a number would be read "
            "as a class id. Give every label as a name, or every label as an id."
        )
    texts = [str(label).strip() for label in labels]
    names = sorted(set(texts))
    index = {name: i for i, name in enumerate(names)}
    return names, [index[text] for text in texts]
