"""Finished tasks are deleted after a TTL, like a Job's ttlSecondsAfterFinished.

The TTL is `spec.ttlSecondsAfterFinished`, else the operator's default
(NICOTASK_TTL_SECONDS_AFTER_FINISHED; unset: keep finished tasks). Finished
tasks are not watched, so deletions are scheduled when the operator writes
the terminal status, and once at start-up from a paged list of finished tasks.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import heapq
import logging

from pydantic import ValidationError

from nicotask import api
from nicotask.api import TASKS, NicoTask
from nicotask.kube import Kube

log = logging.getLogger(__name__)

Due = tuple[dt.datetime, str, str, str]  # when, namespace, name, uid


def ttl_of(task: NicoTask, default: int | None) -> int | None:
    ttl = task.spec.ttl_seconds_after_finished
    return default if ttl is None else ttl


def due_at(task: NicoTask, default: int | None) -> dt.datetime | None:
    """When a finished task may be deleted (None: keep it)."""
    ttl = ttl_of(task, default)
    finished = task.status.finished or task.status.updated
    if ttl is None or finished is None or not task.status.status.finished:
        return None
    return finished + dt.timedelta(seconds=ttl)


class Retention:
    def __init__(self, kube: Kube, default_ttl: int | None) -> None:
        self.kube = kube
        self.default_ttl = default_ttl
        self._heap: list[Due] = []
        self._wakeup = asyncio.Event()

    def schedule(self, task: NicoTask) -> None:
        when = due_at(task, self.default_ttl)
        if when is None:
            return
        ns, name, uid = task.metadata.namespace or "", task.metadata.name, task.metadata.uid or ""
        heapq.heappush(self._heap, (when, ns, name, uid))
        self._wakeup.set()

    async def sweep_finished(
        self, namespaces: list[str], shard: str | None, legacy_finalizer: str
    ) -> None:
        """At start-up: schedule every finished task; drop finalizers of nicotask <= 0.1."""
        for status in api.FINISHED_STATUSES:
            selector = api.status_selector(status)
            async for raw in self.kube.iter_objects(TASKS, namespaces, selector, shard):
                try:
                    task = NicoTask.model_validate(raw)
                except ValidationError:
                    continue
                if legacy_finalizer in task.metadata.finalizers:
                    await self.kube.remove_finalizer(task, legacy_finalizer)
                self.schedule(task)

    async def run(self) -> None:
        while True:
            now = dt.datetime.now(dt.UTC)
            while self._heap and self._heap[0][0] <= now:
                _, ns, name, uid = heapq.heappop(self._heap)
                await self._delete(ns, name, uid)
            wait = (self._heap[0][0] - now).total_seconds() if self._heap else 3600.0
            self._wakeup.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout=max(0.05, wait))

    async def _delete(self, namespace: str, name: str, uid: str) -> None:
        try:
            await self.kube.delete_task(namespace, name, uid)
            log.info("deleted finished task %s/%s (ttlSecondsAfterFinished)", namespace, name)
        except Exception as exc:
            log.warning("could not delete finished task %s/%s: %s", namespace, name, exc)


