#!/usr/bin/env python3

r"""
Micro-batching of the explorer's queries. Queries that arrive while the model
is busy wait in a queue; when the model is free, the oldest waiting query
leads: it takes up to ``max_batch`` waiting queries and its thread runs them
together (one test batch per checkpoint pass for all of them), then every
caller gets its own answer back.

A leader waits at most ``max_wait`` seconds for more queries, and only when
the last batch held more than the queue does now (the explorer was under
load a moment ago, and the other clients are sending their next query): a
lone user typing never waits. Nothing here knows about models; the explorer
passes the function that answers a batch.
"""

import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Deque, Generic, List, Optional, TypeVar

Item = TypeVar("Item")
Answer = TypeVar("Answer")


@dataclass(frozen=True)
class BatchRecord:
    r"""
    One batch as it ran.

    Attributes:
        size (int): Queries answered together.
        waited (float): Seconds the leader waited for more queries
                    (at most ``max_wait``).
    """

    size: int
    waited: float


class _Ticket(Generic[Item]):
    def __init__(self, item: Item) -> None:
        self.item = item
        self.done = False
        self.answer: Any = None
        self.error: Optional[BaseException] = None


class QueryBatcher(Generic[Item, Answer]):
    r"""
    Answers items submitted from many threads in batches, one batch at a
    time.

    Args:
        answer_batch (callable): ``answer_batch(items)`` returns one entry per
                    item, in order: its answer, or the exception that item
                    raised (which :meth:`submit` raises in that item's
                    caller only). An exception raised by ``answer_batch``
                    itself goes to every caller of the batch.
        max_batch (int, optional): The most items in one batch. Default: 16
        max_wait (float, optional): The most seconds a leader waits for more
                    items (only under load, see the module). Default: 0.03
        history (int, optional): Batches remembered in :attr:`batches`.
                    Default: 1000
    """

    def __init__(
        self,
        answer_batch: Callable[[List[Item]], List[Any]],
        max_batch: int = 16,
        max_wait: float = 0.03,
        history: int = 1000,
    ) -> None:
        self.answer_batch = answer_batch
        self.max_batch = max_batch
        self.max_wait = max_wait
        self.batches: Deque[BatchRecord] = deque(maxlen=history)
        self._queue: Deque[_Ticket] = deque()
        self._cond = threading.Condition()
        self._busy = False
        self._last_size = 1

    def submit(self, item: Item) -> Answer:
        r"""
        Answers ``item``, in a batch with the items waiting beside it. Blocks
        until its batch has run.

        Args:
            item: One query, already validated.

        Returns:
            answer: Its entry from ``answer_batch``.
        """
        ticket: _Ticket = _Ticket(item)
        with self._cond:
            self._queue.append(ticket)
            self._cond.notify_all()
            while not ticket.done and (self._busy or self._queue[0] is not ticket):
                self._cond.wait()
            if not ticket.done:  # the model is free and this ticket is oldest
                self._busy = True
                batch = self._gather()
        if not ticket.done:
            self._run(batch)
        if ticket.error is not None:
            raise ticket.error
        return ticket.answer

    def _gather(self) -> List[_Ticket]:
        r"""Takes the batch off the queue; called by the leader, lock held."""
        started = time.perf_counter()
        limit = max(1, int(self.max_batch))
        expected = min(limit, self._last_size)  # as many as last time
        while len(self._queue) < expected:
            left = float(self.max_wait) - (time.perf_counter() - started)
            if left <= 0:
                break
            self._cond.wait(left)
        batch = [self._queue.popleft() for _ in range(min(limit, len(self._queue)))]
        self._last_size = len(batch)
        self.batches.append(BatchRecord(len(batch), time.perf_counter() - started))
        return batch

    def _run(self, batch: List[_Ticket]) -> None:
        answers: List[Any] = []
        failure: Optional[BaseException] = None
        try:
            answers = list(self.answer_batch([t.item for t in batch]))
            if len(answers) != len(batch):
                raise RuntimeError(
                    f"The batch of {len(batch)} queries got {len(answers)} answers."
                )
        except BaseException as error:  # noqa: B036 - handed to every caller
            failure = error
        finally:
            with self._cond:
                for i, ticket in enumerate(batch):
                    if failure is not None:
                        ticket.error = failure
                    elif isinstance(answers[i], BaseException):
                        ticket.error = answers[i]
                    else:
                        ticket.answer = answers[i]
                    ticket.done = True
                self._busy = False
                self._cond.notify_all()
