#!/usr/bin/env python3

r"""
Influence methods side by side: each method's own top-k proponents and
opponents for the same test texts, its time, and the diagnostics that show the
last layer's cancellation effect at a glance.
"""

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from captum.influence._utils.common import KMostInfluentialResults
from torch import Tensor

from captum_tracin_we._data.model_adapter import _raw_labels, is_batch_list
from captum_tracin_we._data.tuple_batches import test_batches
from captum_tracin_we._errors import TracInWEError
from captum_tracin_we._scoring.metrics import (
    listed_cardinality,
    listed_label_agreement,
)
from captum_tracin_we._scoring.top_k import top_k
from captum_tracin_we._views.comparison_views import format_seconds, format_share


@dataclass
class InfluenceComparison:
    r"""
    The result of :func:`compare_influence`.

    Attributes:
        k (int): Training examples listed per test example and direction.
        proponents (dict): Method name -> ``KMostInfluentialResults`` with
                    ``(n_test, k)`` indices and scores, as the method's own
                    ``influence(test_inputs, k=k, proponents=True)`` gave them.
        opponents (dict): Likewise with ``proponents=False``.
        seconds (dict): Method name -> wall-clock seconds of both
                    ``influence`` calls (None for scores given as a tensor).
                    Work done at construction is not included: for example
                    ``TracInCPFastRandProj`` computes its training side there.
        test_labels (Tensor, optional): ``(n_test,)`` labels of the test texts.
        train_labels (Tensor, optional): ``(n_train,)`` training labels.
    """

    k: int
    proponents: Dict[str, KMostInfluentialResults]
    opponents: Dict[str, KMostInfluentialResults]
    seconds: Dict[str, Optional[float]]
    test_labels: Optional[Tensor] = None
    train_labels: Optional[Tensor] = None
    names: List[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.names:
            self.names = list(self.proponents)

    @property
    def most_distinct(self) -> int:
        r"""
        The largest possible cardinality: ``n_test * k``, or the training set
        size when that is smaller (and known from ``train_labels``).
        """
        most = self.num_test * self.k
        if self.train_labels is not None:
            most = min(most, int(self.train_labels.shape[0]))
        return most

    @property
    def num_test(self) -> int:
        r"""The number of test examples."""
        return int(next(iter(self.proponents.values())).indices.shape[0])

    def cardinality(self, name: str, proponents: bool = True) -> int:
        r"""
        Distinct training examples over the top-``k`` lists of all test
        examples: from ``k`` (the same list for every test text, the
        cancellation effect) to ``n_test * k``.
        """
        return listed_cardinality(self._lists(proponents)[name].indices)

    def label_agreement(self, name: str, proponents: bool = True) -> Optional[float]:
        r"""
        Share of the top-``k`` training examples that carry their test
        example's label, averaged over test examples (None without labels).
        High is expected of proponents, low of opponents.
        """
        if self.train_labels is None or self.test_labels is None:
            return None
        top = self._lists(proponents)[name].indices
        return listed_label_agreement(top, self.train_labels, self.test_labels)

    def overlap(self, first: str, second: str, proponents: bool = True) -> float:
        r"""Mean share of the top-``k`` lists two methods have in common."""
        a = self._lists(proponents)[first].indices
        b = self._lists(proponents)[second].indices
        shared = (a[:, :, None] == b[:, None, :]).any(-1).float().sum(1)
        return float((shared / a.shape[1]).mean())

    def rows(self) -> List[Dict[str, Any]]:
        r"""One dict per method: time, cardinalities and label agreements."""
        return [
            {
                "method": name,
                "seconds": self.seconds[name],
                "proponent_cardinality": self.cardinality(name, True),
                "opponent_cardinality": self.cardinality(name, False),
                "proponent_label_agreement": self.label_agreement(name, True),
                "opponent_label_agreement": self.label_agreement(name, False),
            }
            for name in self.names
        ]

    def overlaps(self, proponents: bool = True) -> Dict[Tuple[str, str], float]:
        r"""Pairwise top-``k`` overlap of every two methods."""
        return {
            (a, b): self.overlap(a, b, proponents)
            for a, b in combinations(self.names, 2)
        }

    def table(self) -> str:
        r"""The diagnostics and the pairwise overlaps as plain text."""
        header = (
            "method",
            "seconds",
            "distinct proponents",
            "distinct opponents",
            "proponent label agr.",
            "opponent label agr.",
        )
        lines = [_text_row(header)]
        most = self.most_distinct
        for row in self.rows():
            lines.append(
                _text_row(
                    (
                        _visible(row["method"]),
                        format_seconds(row["seconds"]),
                        f"{row['proponent_cardinality']} / {most}",
                        f"{row['opponent_cardinality']} / {most}",
                        format_share(row["proponent_label_agreement"]),
                        format_share(row["opponent_label_agreement"]),
                    )
                )
            )
        pros, cons = self.overlaps(True), self.overlaps(False)
        if pros:  # two methods or more
            lines.append("")
            lines.append(f"top-{self.k} overlap (proponents, opponents):")
        for pair, value in pros.items():
            first, second = _visible(pair[0]), _visible(pair[1])
            lines.append(f"  {first} ~ {second}: {value:.0%}, {cons[pair]:.0%}")
        return "\n".join(lines)

    def html(self, figure: bool = True) -> Any:
        r"""
        The diagnostics table, the overlaps and (with ``figure``) the
        cancellation figure, as one HTML fragment (method names escaped).

        Returns:
            view: Has ``_repr_html_`` (notebooks), ``str()`` and ``.save(path)``.
        """
        from captum_tracin_we._views.comparison_views import comparison_html

        return comparison_html(self, figure)

    def plot(self, **kwargs: Any) -> Tuple[Any, Any]:
        r"""
        The cancellation figure
        (:func:`~captum_tracin_we._views.word_html.plot_influence_comparison`).

        Returns:
            (fig, axes): The matplotlib figure and its axes.
        """
        from captum_tracin_we._views.comparison_views import plot_influence_comparison

        return plot_influence_comparison(self, **kwargs)

    def _lists(self, proponents: bool) -> Dict[str, KMostInfluentialResults]:
        return self.proponents if proponents else self.opponents


def compare_influence(
    methods: Mapping,
    test_inputs: Any,
    k: int = 10,
    train_labels: Optional[Any] = None,
    show_progress: bool = False,
) -> InfluenceComparison:
    r"""
    Runs each method's own ``influence(test_inputs, k=k, proponents=...)``,
    for proponents and for opponents, and gathers the results with their
    times and the diagnostics of :class:`InfluenceComparison`.

    Args:
        methods (dict): Name -> a Captum ``DataInfluence``-like object whose
                    ``influence(inputs, k=..., proponents=...)`` returns
                    ``KMostInfluentialResults`` (TracInWE, the methods of
                    :func:`tracincp_fast`, :func:`tracincp_fast_rand_proj` and
                    :func:`tracincp`, Captum's own objects,
                    :class:`~captum_tracin_we.evaluation.TracInTFIDF`), or an
                    ``(n_test, n_train)`` score tensor computed beforehand.
        test_inputs: The test batch (or DataLoader) every method accepts; its
                    labels are the test labels. A DataLoader is read once and
                    given to the methods as a list of batches, which the
                    methods of this package take; Captum's own objects take
                    only one tuple batch.
        k (int, optional): Training examples per test example and direction.
                    Default: 10
        train_labels (sequence or Tensor, optional): ``(n_train,)`` training
                    labels, for label agreement. Default: None, meaning read
                    from the first method's ``train_dataset`` (or
                    ``train_dataloader``) when it has one.
        show_progress (bool, optional): Passed to each method that takes it.
                    Default: False

    Returns:
        comparison (InfluenceComparison): With ``.table()``, ``.html()`` and
                    ``.plot()``.
    """
    if not isinstance(methods, Mapping) or not methods:
        raise TypeError("`methods` must be a non-empty dict of name -> method.")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"`k` must be a positive int; got {k!r}.")
    names = [str(name) for name in methods]
    if len(set(names)) < len(names):
        raise ValueError(f"Method names must differ as strings; got {names}.")
    test_inputs = _fixed_order(test_inputs)
    proponents, opponents, seconds = {}, {}, {}
    for name, method in zip(names, methods.values()):
        started = time.perf_counter()
        proponents[name] = _top(method, test_inputs, k, True, show_progress, name)
        opponents[name] = _top(method, test_inputs, k, False, show_progress, name)
        given = isinstance(method, Tensor)  # scores computed beforehand: no time
        seconds[name] = None if given else time.perf_counter() - started
    _check_same_shape(proponents)
    test_labels = _labels_of(test_inputs)
    if test_labels is not None and test_labels.shape[0] != _rows(proponents):
        raise TracInWEError(
            f"The test inputs hold {test_labels.shape[0]} labels, but the methods "
            f"returned {_rows(proponents)} rows; give every method the same inputs."
        )
    if train_labels is None:
        train_labels = _training_labels(methods.values())
    train_labels = _checked_train_labels(
        train_labels, methods.values(), [*proponents.values(), *opponents.values()]
    )
    return InfluenceComparison(
        k=k,
        proponents=proponents,
        opponents=opponents,
        seconds=seconds,
        test_labels=test_labels,
        train_labels=train_labels,
        names=names,
    )


def _fixed_order(inputs: Any) -> Any:
    r"""A DataLoader read once (checked to keep order), so that every method
    sees the same batches; other inputs as they are."""
    from torch.utils.data import DataLoader

    if isinstance(inputs, DataLoader):
        batches = test_batches(inputs, pad_id=0)  # the pad id is not used here
        return [tuple(b) if isinstance(b, list) else b for b in batches]
    return inputs


def _checked_train_labels(
    labels: Any, methods: Any, results: List[KMostInfluentialResults]
) -> Optional[Tensor]:
    if labels is None:
        return None
    labels = torch.as_tensor(labels).reshape(-1).cpu()
    sizes = {
        int(m.shape[1]) if isinstance(m, Tensor) else int(m.num_train_examples)
        for m in methods
        if isinstance(m, Tensor)
        or isinstance(getattr(m, "num_train_examples", None), int)
    }
    largest = max(int(r.indices.max()) for r in results)
    if (sizes and labels.shape[0] not in sizes) or largest >= labels.shape[0]:
        raise TracInWEError(
            f"`train_labels` has {labels.shape[0]} labels, but the training set has "
            f"{sorted(sizes) or 'more than ' + str(largest)} examples; pass one "
            "label per training example, in order."
        )
    return labels


def _top(
    method: Any, inputs: Any, k: int, proponents: bool, progress: bool, name: str
) -> KMostInfluentialResults:
    if isinstance(method, Tensor):
        if method.dim() != 2 or k > method.shape[1]:
            raise ValueError(
                f"Scores given for {name!r} must be (n_test, n_train) with at least "
                f"k={k} columns; got shape {tuple(method.shape)}."
            )
        return top_k(method.detach().float().cpu(), k, proponents)  # type: ignore
    try:
        result = method.influence(
            inputs, k=k, proponents=proponents, show_progress=progress
        )
    except TypeError as error:
        if "show_progress" not in str(error):
            raise
        result = method.influence(inputs, k=k, proponents=proponents)
    indices, values = result
    if not isinstance(indices, Tensor) or indices.dim() != 2 or indices.shape[1] != k:
        raise TracInWEError(
            f"{name!r}.influence(inputs, k={k}) must return (n_test, {k}) indices and "
            f"scores; got {type(result).__name__}."
        )
    return KMostInfluentialResults(indices.long().cpu(), values.detach().float().cpu())


def _check_same_shape(results: Dict[str, KMostInfluentialResults]) -> None:
    rows = {name: int(r.indices.shape[0]) for name, r in results.items()}
    if len(set(rows.values())) > 1:
        raise TracInWEError(
            f"The methods returned different numbers of test rows: {rows}; give every "
            "method the same test inputs."
        )


def _rows(results: Dict[str, KMostInfluentialResults]) -> int:
    return int(next(iter(results.values())).indices.shape[0])


def _labels_of(inputs: Any) -> Optional[Tensor]:
    r"""
    The labels of a test batch, a list of batches, a DataLoader or a tokenized
    ``datasets.Dataset``; None when they cannot be read.
    """
    from captum_tracin_we._data.hf_data import is_hf_dataset

    if is_hf_dataset(inputs):
        column = next(
            (c for c in ("labels", "label") if c in inputs.column_names), None
        )
        return None if column is None else torch.as_tensor(inputs[column]).reshape(-1)
    batches = inputs if _many_batches(inputs) else [inputs]
    try:
        parts = [torch.as_tensor(_raw_labels(batch)) for batch in batches]
    except Exception:  # labels are optional for the diagnostics
        return None
    if any(part.dim() > 1 and part.shape[1:].numel() > 1 for part in parts):
        return None  # several per example (a language model's tokens): no classes
    return torch.cat([part.reshape(-1) for part in parts]).cpu() if parts else None


def _many_batches(inputs: Any) -> bool:
    from torch.utils.data import DataLoader

    return isinstance(inputs, DataLoader) or is_batch_list(inputs)


def _training_labels(methods: Sequence[Any]) -> Optional[Tensor]:
    for method in methods:
        loader = getattr(method, "train_dataloader", None)
        if loader is None:
            loader = getattr(method, "train_dataset", None)
        if loader is not None and _many_batches(loader):
            return _labels_of(loader)
    return None


def _text_row(cells: Sequence[str]) -> str:
    widths = (34, 8, 20, 20, 21, 20)
    return "".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()


def _visible(text: str) -> str:
    from captum_tracin_we._views.text_view import visible_text as visible

    return visible(text)
