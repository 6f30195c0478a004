"""Kubernetes Events, posted off the task's path: a bounded FIFO and a few posters.

Events are advisory: a cancel or a start never waits for one, and when the
backlog is full the oldest are dropped (and counted in the log). Each Event is
also one log line naming its task, so the log tells every transition too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from nicotask.api import NicoTask
from nicotask.kube import Kube
from nicotask.logs import TaskLoggerAdapter, task_logger

log = logging.getLogger(__name__)


def _logger_of(task: NicoTask) -> TaskLoggerAdapter:
    meta = task.metadata
    return task_logger(log, meta.namespace or "", meta.name, meta.uid or "")


@dataclass(frozen=True)
class _Event:
    task: NicoTask
    reason: str
    message: str
    warning: bool


class EventPoster:
    def __init__(self, kube: Kube, posters: int = 4, backlog: int = 10_000) -> None:
        self._kube = kube
        self._queue: asyncio.Queue[_Event] = asyncio.Queue(maxsize=backlog)
        self._posters = posters
        self._tasks: list[asyncio.Task[None]] = []
        self.dropped = 0

    def post(self, task: NicoTask, reason: str, message: str, *, warning: bool = False) -> None:
        event = _Event(task, reason, message, warning)
        _logger_of(task).log(
            logging.WARNING if warning else logging.INFO, "%s: %s", reason, message
        )
        if self._queue.full():
            self._queue.get_nowait()
            self.dropped += 1
            log.warning("event backlog full: dropped %d events so far", self.dropped)
        self._queue.put_nowait(event)

    async def _run(self) -> None:
        while True:
            event = await self._queue.get()
            try:
                await self._kube.create_event(
                    event.task, event.reason, event.message, warning=event.warning
                )
            except Exception:
                _logger_of(event.task).exception("could not post event %s", event.reason)
            finally:
                self._queue.task_done()

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._run()) for _ in range(self._posters)]

    async def drain(self, timeout: float = 5.0) -> None:
        """Post what is queued (bounded), then stop."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), timeout)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
