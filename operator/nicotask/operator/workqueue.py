"""A work queue in the manner of controller-runtime's: keys in arrival order, at most
one in flight per key, a key added while in flight runs once more afterwards, and
delayed re-adds for retries. Bursts are served FIFO by a fixed number of workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from contextlib import AbstractContextManager
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)

Handler = Callable[[K, frozenset[str]], Awaitable[None]]
LogContext = Callable[[K], AbstractContextManager[object]]


def _no_context(key: object) -> AbstractContextManager[object]:
    return contextlib.nullcontext()


async def _always() -> None:
    return None


class WorkQueue(Generic[K]):
    """Run `handler(key, hints)` for queued keys with `workers` at a time.

    Hints are short words a producer attaches (e.g. "closed"); they are merged
    while the key waits. The handler raising `Retry` re-adds the key after its
    delay; any other exception is logged and retried after `error_delay`.
    `log_context(key)` wraps each run and its failure line (e.g. the task's log fields).
    `gate()` is awaited before each key is taken (e.g. until this replica is active):
    keys wait in the queue meanwhile; work already running finishes.
    """

    def __init__(
        self,
        handler: Handler[K],
        workers: int,
        error_delay: float = 5.0,
        log_context: LogContext[K] = _no_context,
        gate: Callable[[], Awaitable[None]] = _always,
    ) -> None:
        self._handler = handler
        self._gate = gate
        self._log_context = log_context
        self._workers = max(1, workers)
        self._error_delay = error_delay
        self._queued: OrderedDict[K, set[str]] = OrderedDict()
        self._running: dict[K, set[str] | None] = {}  # in flight -> hints added meanwhile
        self._timers: dict[K, asyncio.TimerHandle] = {}
        self._ready = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def __len__(self) -> int:
        return len(self._queued)

    def add(self, key: K, *hints: str) -> None:
        """Queue `key` (again); a key already waiting keeps its place."""
        if key in self._running:
            pending = self._running[key]
            self._running[key] = (pending or set()) | set(hints)
            return
        self._queued.setdefault(key, set()).update(hints)
        self._ready.set()

    def add_after(self, key: K, delay: float, *hints: str) -> None:
        """Queue `key` after `delay` seconds (the earliest of several delays wins)."""
        loop = asyncio.get_running_loop()
        timer = self._timers.get(key)
        due = loop.time() + delay
        if timer is not None:
            if timer.when() <= due:
                return
            timer.cancel()

        def fire() -> None:
            self._timers.pop(key, None)
            self.add(key, *hints)

        self._timers[key] = loop.call_at(due, fire)

    async def _next(self) -> tuple[K, frozenset[str]]:
        while True:
            await self._gate()
            if self._queued:
                break
            self._ready.clear()
            await self._ready.wait()
        key, hints = self._queued.popitem(last=False)
        self._running[key] = None
        return key, frozenset(hints)

    async def _worker(self) -> None:
        while True:
            key, hints = await self._next()
            try:
                with self._log_context(key):
                    try:
                        await self._handler(key, hints)
                    except Retry as retry:
                        log.debug("work on %s retried in %.0fs: %s", key, retry.delay, retry)
                        self.add_after(key, retry.delay, *hints)
                    except Exception:
                        log.exception(
                            "work on %s failed; retrying in %.0fs", key, self._error_delay
                        )
                        self.add_after(key, self._error_delay, *hints)
            finally:
                again = self._running.pop(key, None)
                if again is not None:
                    self.add(key, *again)

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._worker()) for _ in range(self._workers)]

    async def stop(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []


class Retry(Exception):
    """The work could not complete now (e.g. Temporal unreachable): retry after `delay`."""

    def __init__(self, message: str, delay: float) -> None:
        super().__init__(message)
        self.delay = delay
