#!/usr/bin/env python3

r"""
The explorer's micro-batcher on its own, with a stand-in for the model: the
batch bound, the wait bound, a lone query that never waits, and errors that
reach only their own caller. Every wait is bounded; the threads end by
themselves.
"""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from captum_tracin_we._explorer.query_batching import QueryBatcher


class _Model:
    r"""Answers a batch of numbers with their squares after ``seconds``; a
    negative number is that item's error."""

    def __init__(self, seconds=0.05):
        self.seconds = seconds
        self.batches = []
        self.running = 0
        self.most_running = 0
        self._lock = threading.Lock()

    def __call__(self, items):
        with self._lock:
            self.running += 1
            self.most_running = max(self.most_running, self.running)
        self.batches.append(list(items))
        time.sleep(self.seconds)
        with self._lock:
            self.running -= 1
        return [ValueError(f"bad {x}") if x < 0 else x * x for x in items]


def _submit_all(batcher, items):
    def ask(x):
        try:
            return batcher.submit(x)
        except Exception as error:  # noqa: BLE001 - compared by the test
            return error

    with ThreadPoolExecutor(len(items)) as pool:
        return list(pool.map(ask, items, timeout=60))


def test_each_caller_gets_its_own_answer_and_batches_run_one_at_a_time():
    model = _Model()
    batcher = QueryBatcher(model, max_batch=16, max_wait=0.02)
    items = list(range(12))
    assert _submit_all(batcher, items) == [x * x for x in items]
    assert model.most_running == 1
    assert sorted(x for b in model.batches for x in b) == items
    assert max(len(b) for b in model.batches) > 1  # they waited and went together


@pytest.mark.parametrize("max_batch", [1, 2, 5])
def test_the_batch_bound_holds(max_batch):
    model = _Model(0.02)
    batcher = QueryBatcher(model, max_batch=max_batch, max_wait=0.02)
    assert _submit_all(batcher, list(range(11))) == [x * x for x in range(11)]
    assert max(len(b) for b in model.batches) <= max_batch
    assert [r.size for r in batcher.batches] == [len(b) for b in model.batches]


def test_a_lone_query_does_not_wait_and_the_wait_is_bounded():
    model = _Model(0.0)
    batcher = QueryBatcher(model, max_batch=8, max_wait=0.2)
    for x in range(3):  # one client, one query after another
        started = time.perf_counter()
        assert batcher.submit(x) == x * x
        assert time.perf_counter() - started < 0.1
    assert all(r.waited < 0.05 for r in batcher.batches)
    # under load (the last batch held 4), a lone query waits for others, but
    # never longer than max_wait
    batcher._last_size = 4
    started = time.perf_counter()
    assert batcher.submit(7) == 49
    waited = batcher.batches[-1].waited
    assert 0.15 <= waited <= 0.2 + 0.1 and time.perf_counter() - started < 0.5
    assert batcher.batches[-1].size == 1
    assert batcher.submit(8) == 64 and batcher.batches[-1].waited < 0.05  # load gone


def test_a_bad_item_fails_alone_and_a_failing_batch_fails_its_callers():
    model = _Model(0.02)
    batcher = QueryBatcher(model, max_batch=16, max_wait=0.02)
    answers = _submit_all(batcher, [1, -2, 3, 4, -5, 6])
    assert [a for a in answers if not isinstance(a, Exception)] == [1, 9, 16, 36]
    assert [str(a) for a in answers if isinstance(a, Exception)] == ["bad -2", "bad -5"]

    def broken(items):
        raise RuntimeError("the model broke")

    failing = QueryBatcher(broken, max_batch=4, max_wait=0.0)
    assert all(isinstance(a, RuntimeError) for a in _submit_all(failing, [1, 2, 3]))
    failing.answer_batch = model  # the next batch runs again
    assert failing.submit(3) == 9
