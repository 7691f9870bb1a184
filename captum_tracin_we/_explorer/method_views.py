#!/usr/bin/env python3

r"""
The explorer's answers to queries run together, each the answer it gets
alone, bitwise. Every text keeps its own single-text test batch, exactly as
alone; what the queries share is the checkpoint pass. TracIn-WE and a stored
last layer on the same TracInWE (:class:`~captum_tracin_we.StoredTracInCPFast`)
load each checkpoint once for all the waiting texts, and at each checkpoint
score each text as alone (:meth:`TracInWE.influence_pass`); the stored last
layer reads its test side (the head's input and the loss gradient at its
output) from TracIn-WE's forward and backward pass of the same text, so each
text goes through the model once per checkpoint, not twice. Any other method
is called text by text, as alone. A query alone is the same run with one
text, so nothing depends on which queries waited together.
"""

import time
from contextlib import ExitStack, contextmanager
from typing import Any, Dict, Iterator, List, Tuple

from torch import Tensor

from captum_tracin_we._explorer.answers import _answer, _Query, _TestText
from captum_tracin_we._explorer.requests import _check_finite

TRACIN_WE = "TracIn-WE"
# A method's two ranked sides: (indices, scores) of proponents, then opponents.
Sides = List[Tuple[List[int], List[float]]]


def answer_queries(explorer: Any, queries: List[_Query]) -> List[Any]:
    r"""
    The answers of queries run together, under the model's lock.

    Args:
        explorer (Explorer): The explorer (its methods, model lock, tests).
        queries (list of _Query): Validated queries.

    Returns:
        answers (list): Per query, its answer dict or the exception it raised
                    (only that query's: a text that fails leaves the others).
    """
    with explorer._lock:
        started = time.perf_counter()
        tests: List[Any] = []
        for asked in queries:
            try:
                tests.append(explorer._test(asked.text, asked.label))
            except Exception as error:  # that query's own error
                tests.append(error)
        views: List[Dict[str, Any]] = [{} for _ in queries]
        for name, found in _method_views(explorer, queries, tests).items():
            for i, view in found.items():
                views[i][name] = view
    answers: List[Any] = []
    for asked, test, view in zip(queries, tests, views):
        failed = [v for v in view.values() if isinstance(v, Exception)]
        if isinstance(test, Exception) or failed:
            answers.append(test if isinstance(test, Exception) else failed[0])
            continue
        results = [view[name] for name in asked.names]
        answers.append(_answer(test, explorer.label_names, asked.k, results, started))
    return answers


def _method_views(
    explorer: Any, queries: List[_Query], tests: List[Any]
) -> Dict[str, Dict[int, Any]]:
    r"""Per method, the view (or error) of each query that asks for it."""
    chosen: Dict[str, List[int]] = {}
    for name in explorer.methods:
        wanted = [
            i
            for i, asked in enumerate(queries)
            if name in asked.names and not isinstance(tests[i], Exception)
        ]
        if wanted:
            chosen[name] = wanted
    shared = [n for n in chosen if shares_pass(explorer.methods[n], explorer.tracin)]
    found: Dict[str, Dict[int, Any]] = {}
    scores = shared_pass_scores(
        explorer.tracin,
        {n: explorer.methods[n] for n in shared},
        {n: [tests[i].batch for i in chosen[n]] for n in shared},
    )
    n_train = len(explorer._examples)
    for name in shared:
        rows, seconds = scores[name]
        found[name] = {}
        for i, row in zip(chosen[name], rows):
            k = min(queries[i].k, n_train)
            found[name][i] = _view(explorer, name, tests[i], row, k, seconds)
    for name in chosen:
        if name not in shared:
            found[name] = {
                i: _alone_view(explorer, name, tests[i], queries[i].k)
                for i in chosen[name]
            }
    return found


def shares_pass(method: Any, tracin: Any) -> bool:
    r"""Whether ``method`` scores from ``tracin``'s own checkpoint pass:
    TracIn-WE itself, or a stored last layer on the same TracInWE."""
    if not callable(getattr(method, "influence_pass", None)):
        return False
    return method is tracin or getattr(method, "tracin", None) is tracin


def shared_pass_scores(
    tracin: Any, methods: Dict[str, Any], inputs: Dict[str, List[Any]]
) -> Dict[str, Tuple[List[Any], float]]:
    r"""
    Scores of each method's test inputs from one checkpoint pass of
    ``tracin``: each checkpoint loaded once, each input scored as alone; a
    stored last layer given the same input as TracIn-WE takes that input's
    test side from TracIn-WE's passes (:func:`_layer_readers`).

    Args:
        tracin (TracInWE): Runs the pass (its model's lock held by the caller).
        methods (dict): Name -> a method with ``influence_pass``.
        inputs (dict): Name -> its test inputs (one test batch each).

    Returns:
        scores (dict): Name -> (per input its ``(n_train,)`` scores or its
                    exception, the method's seconds per input: its own time
                    and its share of the checkpoint loads, over its inputs).
    """
    if not methods:
        return {}
    passes: Dict[str, Any] = {}
    failed: Dict[str, Exception] = {}
    spent = {name: 0.0 for name in methods}
    for name, method in methods.items():
        started = time.perf_counter()
        try:
            passes[name] = method.influence_pass(inputs[name])
        except Exception as error:
            failed[name] = error
        spent[name] += time.perf_counter() - started
    loading = 0.0
    readers = _layer_readers(tracin, methods, inputs, passes)
    try:
        mark = time.perf_counter()
        for loaded in tracin.checkpoint_pass() if passes else ():
            loading += time.perf_counter() - mark
            watched = {name: passes[name].watch() for name in readers}
            for name, scores in passes.items():
                started = time.perf_counter()
                if name in readers:
                    scores.add(loaded, watched[name])
                elif methods[name] is tracin and watched:
                    scores.add(loaded, watch=_watching(watched, readers))
                else:
                    scores.add(loaded)
                spent[name] += time.perf_counter() - started
            mark = time.perf_counter()
        loading += time.perf_counter() - mark
    except Exception as error:  # a checkpoint that does not load: every input's
        failed.update({name: error for name in passes})
    found: Dict[str, Tuple[List[Any], float]] = {}
    for name in methods:
        count = max(1, len(inputs[name]))
        seconds = (spent[name] + loading / max(1, len(passes))) / count
        if name in failed:
            found[name] = ([failed[name]] * len(inputs[name]), seconds)
            continue
        rows = [r if isinstance(r, Exception) else r[0] for r in passes[name].results()]
        found[name] = (rows, seconds)
    return found


def _layer_readers(
    tracin: Any,
    methods: Dict[str, Any],
    inputs: Dict[str, List[Any]],
    passes: Dict[str, Any],
) -> Dict[str, Dict[int, int]]:
    r"""
    The stored last layers that take their test side from TracIn-WE's own
    forward and backward passes (each test text goes through the model once
    per checkpoint for both, not twice): per such method, TracIn-WE's input
    position -> the method's position, for the inputs both were given (the
    same batch object). Empty unless TracIn-WE runs in the pass before them.
    """
    first = next(iter(passes), None)
    if first is None or methods[first] is not tracin:
        return {}
    positions = {id(batch): p for p, batch in enumerate(inputs[first])}
    readers: Dict[str, Dict[int, int]] = {}
    for name, scores in passes.items():
        if name != first and callable(getattr(scores, "watch", None)):
            readers[name] = {
                positions[id(b)]: q
                for q, b in enumerate(inputs[name])
                if id(b) in positions
            }
    return {name: found for name, found in readers.items() if found}


def _watching(watched: Dict[str, Any], readers: Dict[str, Dict[int, int]]) -> Any:
    r"""``watch(i)`` for TracIn-WE's input ``i``: every reader's watch on its
    own position of that input, entered together."""

    @contextmanager
    def watch(i: int) -> Iterator[None]:
        with ExitStack() as stack:
            for name, found in readers.items():
                if i in found:
                    stack.enter_context(watched[name](found[i]))
            yield

    return watch


def _view(
    explorer: Any, name: str, test: _TestText, row: Any, k: int, seconds: float
) -> Any:
    r"""A method's view of one test from its ``(n_train,)`` scores, or the
    error it raised."""
    if isinstance(row, Exception):
        return row
    try:
        return shown(explorer, name, test, _both_sides(row, k), seconds)
    except Exception as error:
        return error


def _both_sides(row: Tensor, k: int) -> Sides:
    sides = [row.topk(k, largest=top) for top in (True, False)]
    return [(s.indices.tolist(), s.values.tolist()) for s in sides]


def _alone_view(explorer: Any, name: str, test: _TestText, k: int) -> Any:
    r"""A method outside the shared pass, on the test's own batch: its
    ``k`` proponents, then its ``k`` opponents (one call each)."""
    method = explorer.methods[name]
    k = min(k, len(explorer._examples))
    try:
        started = time.perf_counter()
        sides: Sides = []
        for top in (True, False):
            found = method.influence(test.batch, k=k, proponents=top)
            sides.append(
                (found.indices[0].tolist(), found.influence_scores[0].tolist())
            )
        return shown(explorer, name, test, sides, time.perf_counter() - started)
    except Exception as error:
        return error


def shown(
    explorer: Any, name: str, test: _TestText, sides: Sides, seconds: float
) -> Dict[str, Any]:
    r"""
    One method's view of one test: its proponents and opponents as rows,
    only scores of each side's sign (as in ``explain``).

    Raises:
        RequestError: If a score is not finite.
    """
    rows = []
    for (indices, values), sign in zip(sides, (1.0, -1.0)):
        _check_finite(values, name)
        rows.append(
            [
                {**explorer._train_row(i, test.counted), "score": float(v)}
                for i, v in zip(indices, values)
                if v * sign > 0
            ]
        )
    return {
        "name": name,
        "proponents": rows[0],
        "opponents": rows[1],
        "seconds": seconds,
    }
