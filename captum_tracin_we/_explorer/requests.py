#!/usr/bin/env python3

r"""
What a request may ask of the explorer: the limits, and the checks that
refuse anything else with a 4xx status and a message.
"""

import math
from dataclasses import dataclass
from typing import Any, List


@dataclass(frozen=True)
class Limits:
    r"""
    Bounds on what one request may ask (a request over them gets a 4xx).

    Attributes:
        max_text_chars (int): Characters of a typed text. Default: 20000
        max_k (int): Proponents and opponents per method. Default: 50
        max_page (int): Rows of one audit page. Default: 200
        max_body_bytes (int): Bytes of a request body. Default: 262144
    """

    max_text_chars: int = 20_000
    max_k: int = 50
    max_page: int = 200
    max_body_bytes: int = 256 * 1024


class RequestError(ValueError):
    r"""A request the explorer cannot answer as asked; ``status`` is its HTTP code."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def _check_finite(values: List[float], name: str) -> None:
    if not all(math.isfinite(v) for v in values):
        raise ValueError(
            f"{name} gave scores that are not finite (NaN or inf): a checkpoint or "
            "learning rate is broken, or the model overflows on this text."
        )


def _checked_int(value: Any, name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestError(f"`{name}` must be an integer; got {value!r}.")
    if not low <= value <= high:
        raise RequestError(f"`{name}` must lie in [{low}, {high}]; got {value}.")
    return value


def checked_text(text: Any, max_chars: int, max_tokens: int) -> str:
    r"""A query's text: a non-empty string of valid UTF-8, at most ``max_chars``.

    Raises:
        RequestError: Naming the problem (413 for a text too long).
    """
    if not isinstance(text, str):
        raise RequestError("`text` must be a string.")
    if not text.strip():
        raise RequestError("`text` is empty; type a sentence to explain.")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise RequestError(
            "`text` holds an unpaired surrogate (\\ud800-\\udfff), which is "
            "not text; send it as UTF-8."
        ) from None
    if len(text) > max_chars:
        raise RequestError(
            f"`text` has {len(text)} characters; the explorer takes at most "
            f"{max_chars} (the model reads only its first {max_tokens} tokens "
            "anyway).",
            status=413,
        )
    return text


def checked_methods(methods: Any, available: List[str]) -> List[str]:
    r"""The methods a query asks for (all when None), each once, in order.

    Raises:
        RequestError: For a value that is not a non-empty list of known names.
    """
    if methods is None:
        return list(available)
    if not isinstance(methods, list) or not methods:
        raise RequestError("`methods` must be a non-empty list of method names.")
    if not all(isinstance(m, str) for m in methods):
        raise RequestError("`methods` must be a list of method names (strings).")
    unknown = [m for m in methods if m not in available]
    if unknown:
        raise RequestError(
            f"Unknown method {unknown[0]!r}; choose from {list(available)}."
        )
    return list(dict.fromkeys(methods))
