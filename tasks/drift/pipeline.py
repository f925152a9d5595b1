"""Acquisition and edge inference overlapped: the next batch is acquired and committed while
this one is inferred.

A writer thread runs ``produce(first, end)`` (acquire frames ``first``..``end-1`` and commit
them to the dataset) batch after batch and hands each committed range through a queue to the
calling thread, which runs ``consume(end)`` (the ``EdgeLoop`` over the frames committed before
``end``). The edge reads only committed frames and commits its own tables under the dataset's
writer lock (``storage.datasets.tables.writing``), so a crash anywhere loses nothing committed
and a new run resumes after the last decision, as without the thread.

The producer is one batch ahead at most, and just in time: it starts the next batch when the
edge is about to finish this one (the edge's last batch time less its own last batch time),
not as soon as it can. A batch produced earlier would only wait, and its frames' latency
(acquired → decided) would grow by that wait; so the loop's cycle is the longer of the two
stages rather than their sum, and a frame's latency stays what it is without the thread. (An
instrument that delivers frames at its own pace faster than the edge decides them needs a
faster edge; no queue helps it.) A failure of the producer is raised in the calling thread
after the batches committed before it were consumed; a failure of ``consume`` stops the
producer after the batch it is on; the thread is joined before ``run_pipelined`` returns or
raises, so none outlives it.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

T = TypeVar("T")

POLL_S = 0.05  # how often a waiting producer checks that the consumer still runs


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


_DONE = object()


class _Timing:
    """When the consumer took its last batch and how long each stage last took (s)."""

    def __init__(self) -> None:
        self.taken_at: float | None = None
        self.consume_s = 0.0
        self.produce_s = 0.0

    def start_at(self) -> float:
        """When the producer should start: its batch is then ready as the consumer needs it."""
        if self.taken_at is None:
            return 0.0
        return self.taken_at + self.consume_s - self.produce_s


def overlap_pays() -> bool:
    """Whether acquisition may overlap inference here: only where a core is left that the
    edge's threads (torch's, and as many frame checks) do not use. On the 2-core CI machine,
    idle, the overlapped loop ran 12.7 frames/s against 19.0 one stage after the other (p95
    latency 796 against 331 ms, ``benchmarks/loop.py``, 2026-11-30): two stages on two cores
    only take turns, and lose to the switching."""
    import torch

    return (os.cpu_count() or 1) > torch.get_num_threads()


def run_pipelined(
    produce: Callable[[int, int], Any],
    ranges: Iterable[tuple[int, int]],
    consume: Callable[[int], T],
    overlap: bool = True,
    committed: Callable[[], int] | None = None,
) -> list[T]:
    """``consume(end)`` for every ``(first, end)`` of ``ranges`` once ``produce(first, end)`` has
    committed it, the production of each range overlapping the consumption of the one before
    (``overlap``; else one after the other in the calling thread); returns ``consume``'s
    results in order (see the module docstring).

    ``committed`` (the end of the frames committed so far): consumed once more after the last
    range, so that frames a killed run committed but never consumed are consumed too — a run
    that resumes with nothing left to acquire has no range at all.
    """
    results = _run(produce, ranges, consume, overlap)
    if committed is not None:
        results.append(consume(committed()))
    return results


def _run(
    produce: Callable[[int, int], Any],
    ranges: Iterable[tuple[int, int]],
    consume: Callable[[int], T],
    overlap: bool,
) -> list[T]:
    if not overlap:
        results: list[T] = []
        for first, end in ranges:
            produce(first, end)
            results.append(consume(end))
        return results
    handoff: queue.Queue[Any] = queue.Queue()
    turn = threading.Semaphore(1)  # one batch produced and not yet taken, at most
    stop = threading.Event()
    timing = _Timing()

    def wait_turn() -> bool:
        while not stop.is_set():
            if turn.acquire(timeout=POLL_S):
                # Interruptible: a consumer that fails sets ``stop``.
                stop.wait(max(0.0, timing.start_at() - time.perf_counter()))
                return not stop.is_set()
        return False

    def producer() -> None:
        try:
            for first, end in ranges:
                if not wait_turn():
                    return
                t0 = time.perf_counter()
                produce(first, end)
                timing.produce_s = time.perf_counter() - t0
                handoff.put(end)
        except BaseException as exc:  # handed to the consumer, which raises it
            handoff.put(_Failed(exc))
            return
        handoff.put(_DONE)

    thread = threading.Thread(target=producer, name="acquisition-writer", daemon=True)
    thread.start()
    results = []
    try:
        while (item := handoff.get()) is not _DONE:
            if isinstance(item, _Failed):
                raise item.error
            timing.taken_at = time.perf_counter()
            turn.release()
            results.append(consume(item))
            timing.consume_s = time.perf_counter() - timing.taken_at
    finally:
        stop.set()
        thread.join()
    return results
