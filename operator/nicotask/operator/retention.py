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
from typing import Any

from nicotask import api
from nicotask.api import TASKS, NicoTask
from nicotask.kube import Kube
from nicotask.logs import task_context

log = logging.getLogger(__name__)

Due = tuple[dt.datetime, str, str, str]  # when, namespace, name, uid
# Small pages: the operator's RSS keeps the high-water mark of one page's JSON
# (2,000 tasks in pages of 500 left it about 6 MB larger, in pages of 50 not at all).
SWEEP_PAGE = 50


def due(ttl: int | None, finished: dt.datetime | None) -> dt.datetime | None:
    """When a task that finished at `finished` may be deleted (None: keep it)."""
    if ttl is None or finished is None:
        return None
    return finished + dt.timedelta(seconds=ttl)


def due_at(task: NicoTask, default: int | None) -> dt.datetime | None:
    """When a finished task may be deleted (None: keep it)."""
    if not task.status.status.finished:
        return None
    ttl = task.spec.ttl_seconds_after_finished
    return due(default if ttl is None else ttl, task.status.finished or task.status.updated)


def raw_due_at(raw: dict[str, Any], default: int | None) -> dt.datetime | None:
    """due_at from the stored JSON of a finished task, without building the model.

    The start-up sweep reads every finished task; parsing each into a NicoTask
    (report and all) left the operator about 3 MB larger per 1,000 of them.
    """
    ttl = (raw.get("spec") or {}).get("ttlSecondsAfterFinished")
    status = raw.get("status") or {}
    stamp = status.get("finished") or status.get("updated")
    try:
        finished = dt.datetime.fromisoformat(stamp) if isinstance(stamp, str) else None
        if finished is not None and finished.tzinfo is None:
            finished = finished.replace(tzinfo=dt.UTC)
        return due(default if ttl is None else int(ttl), finished)
    except (TypeError, ValueError):
        return None


class Retention:
    def __init__(self, kube: Kube, default_ttl: int | None) -> None:
        self.kube = kube
        self.default_ttl = default_ttl
        self._heap: list[Due] = []
        self._wakeup = asyncio.Event()

    def schedule(self, task: NicoTask) -> None:
        meta = task.metadata
        self._push(due_at(task, self.default_ttl), meta.namespace or "", meta.name, meta.uid or "")

    def _push(self, when: dt.datetime | None, namespace: str, name: str, uid: str) -> None:
        if when is None:
            return
        heapq.heappush(self._heap, (when, namespace, name, uid))
        self._wakeup.set()

    async def sweep_finished(self, namespaces: list[str], shard: str | None) -> None:
        """At start-up: schedule every finished task (from the stored JSON, no models)."""
        for status in api.FINISHED_STATUSES:
            selector = f"status.status={status.value}"
            pages = self.kube.iter_objects(TASKS, namespaces, selector, shard, page=SWEEP_PAGE)
            async for raw in pages:
                meta = raw.get("metadata") or {}
                self._push(
                    raw_due_at(raw, self.default_ttl),
                    meta.get("namespace") or "",
                    meta.get("name") or "",
                    meta.get("uid") or "",
                )

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
        with task_context(namespace, name, uid):
            try:
                await self.kube.delete_task(namespace, name, uid)
                log.info("deleted finished task %s/%s (ttlSecondsAfterFinished)", namespace, name)
            except Exception as exc:
                log.warning("could not delete finished task %s/%s: %s", namespace, name, exc)
