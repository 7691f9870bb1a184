#!/usr/bin/env python3

r"""What the explorer answers a query with: the validated query as it waits
for its batch, the test text as the model saw it, and the answer's shape."""

import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional


@dataclass(frozen=True)
class _Query:
    r"""One validated query, as it waits for its batch."""

    text: str
    label: Optional[int]
    k: int
    names: List[str]


def _answer(
    test: "_TestText",
    names: List[str],
    k: int,
    results: List[Dict[str, Any]],
    started: float,
) -> Dict[str, Any]:
    r"""A query's answer: its text's summary and each method's view."""
    return {
        **test.summary(names),
        "k": k,
        "methods": results,
        "seconds": time.perf_counter() - started,
    }


@dataclass
class _TestText:
    text: str
    batch: Any
    token_ids: List[int]
    counted: set
    words: List[Dict[str, Any]]
    truncated: bool
    label: int
    predicted: int
    probabilities: List[float]

    def summary(self, names: List[str]) -> Dict[str, Any]:
        return {
            "text": self.text,
            "truncated": self.truncated,
            "num_tokens": len(self.token_ids),
            "words": self.words,
            "label": self.label,
            "label_name": names[self.label],
            "predicted": self.predicted,
            "predicted_name": names[self.predicted],
            "probabilities": [
                {"label": names[i], "p": p} for i, p in enumerate(self.probabilities)
            ],
        }
