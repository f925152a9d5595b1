"""Acquisition and edge inference overlapped: the next batch is acquired and committed while
this one is inferred.

A writer thread runs ``produce(first, end)`` (acquire frames ``first``..``end-1`` and commit
them to the dataset) batch after batch and hands each committed range through a bounded queue
to the calling thread, which runs ``consume(end)`` (the ``EdgeLoop`` over the frames committed
before ``end``). The edge reads only committed frames and commits its own tables under the
dataset's writer lock (``storage.datasets.tables.writing``), so a crash anywhere loses nothing
committed and a new run resumes after the last decision, as without the thread.

The producer runs at most ``depth`` batches ahead of the one being consumed: it starts the
next batch when the edge takes the last one, so a producer faster than the edge waits rather
than piling up frames (each batch ahead adds a batch's processing time to its frames' latency;
an instrument faster than the edge needs a faster edge, not a longer queue). A failure of the
producer is raised in the calling thread after the batches committed before it were consumed;
a failure of ``consume`` stops the producer after the batch it is on; the thread is joined
before ``run_pipelined`` returns or raises, so none outlives it.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

T = TypeVar("T")

POLL_S = 0.05  # how often a producer waiting for its turn checks that the consumer still runs


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


_DONE = object()


def run_pipelined(
    produce: Callable[[int, int], Any],
    ranges: Iterable[tuple[int, int]],
    consume: Callable[[int], T],
    *,
    depth: int = 1,
) -> list[T]:
    """``consume(end)`` for every ``(first, end)`` of ``ranges`` once ``produce(first, end)`` has
    committed it, the production of later ranges overlapping the consumption of earlier ones;
    returns ``consume``'s results in order (see the module docstring)."""
    if depth < 1:
        raise ValueError(f"pipeline depth must be ≥ 1, got {depth}")
    handoff: queue.Queue[Any] = queue.Queue()
    ahead = threading.Semaphore(depth)  # batches produced and not yet taken by the consumer
    stop = threading.Event()

    def wait_turn() -> bool:
        while not stop.is_set():
            if ahead.acquire(timeout=POLL_S):
                return True
        return False

    def producer() -> None:
        try:
            for first, end in ranges:
                if not wait_turn():
                    return
                produce(first, end)
                handoff.put(end)
        except BaseException as exc:  # handed to the consumer, which raises it
            handoff.put(_Failed(exc))
            return
        handoff.put(_DONE)

    thread = threading.Thread(target=producer, name="acquisition-writer", daemon=True)
    thread.start()
    results: list[T] = []
    try:
        while (item := handoff.get()) is not _DONE:
            ahead.release()
            if isinstance(item, _Failed):
                raise item.error
            results.append(consume(item))
    finally:
        stop.set()
        thread.join()
    return results
