"""The operator's work queue: FIFO, one in flight per key, re-runs, retries, bounded workers."""

from __future__ import annotations

import asyncio

from nicotask.operator.workqueue import Retry, WorkQueue


async def _drain(queue: WorkQueue[str], done: asyncio.Event) -> None:
    queue.start()
    try:
        await asyncio.wait_for(done.wait(), 5)
    finally:
        await queue.stop()


async def test_keys_run_in_arrival_order_with_bounded_concurrency() -> None:
    order: list[str] = []
    in_flight = 0
    peak = 0
    done = asyncio.Event()

    async def handle(key: str, hints: frozenset[str]) -> None:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        order.append(key)
        await asyncio.sleep(0.01)
        in_flight -= 1
        if len(order) == 20:
            done.set()

    queue: WorkQueue[str] = WorkQueue(handle, workers=3)
    for i in range(20):
        queue.add(f"k{i:02d}")
    await _drain(queue, done)
    assert order == [f"k{i:02d}" for i in range(20)]
    assert peak == 3


async def test_a_key_is_never_in_flight_twice_and_reruns_with_merged_hints() -> None:
    calls: list[frozenset[str]] = []
    release = asyncio.Event()
    done = asyncio.Event()
    active = 0

    async def handle(key: str, hints: frozenset[str]) -> None:
        nonlocal active
        active += 1
        assert active == 1, "the same key ran twice at once"
        calls.append(hints)
        if len(calls) == 1:
            await release.wait()
        active -= 1
        if len(calls) == 2:
            done.set()

    queue: WorkQueue[str] = WorkQueue(handle, workers=4)
    queue.start()
    queue.add("a", "first")
    await asyncio.sleep(0.01)
    queue.add("a", "closed")
    queue.add("a", "deleted")
    await asyncio.sleep(0.01)
    release.set()
    await asyncio.wait_for(done.wait(), 5)
    await asyncio.sleep(0.01)
    await queue.stop()
    assert calls == [frozenset({"first"}), frozenset({"closed", "deleted"})]
    # Nothing is kept per key once its work is done (no lock or entry per finished task).
    assert len(queue) == 0 and not queue._running and not queue._timers


async def test_a_waiting_key_keeps_its_place() -> None:
    order: list[str] = []
    done = asyncio.Event()
    gate = asyncio.Event()

    async def handle(key: str, hints: frozenset[str]) -> None:
        await gate.wait()
        order.append(key)
        if len(order) == 3:
            done.set()

    queue: WorkQueue[str] = WorkQueue(handle, workers=1)
    queue.add("a")
    queue.add("b")
    queue.add("c")
    queue.add("a")  # already waiting: no second run, no new place
    gate.set()
    await _drain(queue, done)
    assert order == ["a", "b", "c"]


async def test_retry_and_errors_come_back_after_their_delay() -> None:
    attempts: dict[str, int] = {"retry": 0, "boom": 0}
    done = asyncio.Event()

    async def handle(key: str, hints: frozenset[str]) -> None:
        attempts[key] += 1
        if attempts[key] == 1:
            if key == "retry":
                raise Retry("Temporal unreachable", 0.05)
            raise RuntimeError("API server hiccup")
        if all(n >= 2 for n in attempts.values()):
            done.set()

    queue: WorkQueue[str] = WorkQueue(handle, workers=2, error_delay=0.05)
    queue.add("retry")
    queue.add("boom")
    await _drain(queue, done)
    assert attempts == {"retry": 2, "boom": 2}
