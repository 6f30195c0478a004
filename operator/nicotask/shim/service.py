"""Cancel and find, answered from the task cache; a fresh cancel is one PATCH.

`decide_cancel` is pure. A cancel decides on the cached task:
- Terminated, or `spec.cancel` already true: 202 from the cache, no API call;
- Succeeded / Failed: 400, no API call;
- otherwise one merge patch of `spec.cancel: true` (and who asked) with the
  cached `resourceVersion` as precondition, so a task deleted and re-created
  under the same name is never patched. On 409 (the cached copy was stale)
  the shim reads the task once and decides again; no sleeping.
Concurrent cancels of one task in this process share one patch (single flight).
"""

from __future__ import annotations

import asyncio
import enum
import logging
from typing import Any

from nicotask import api, lifecycle
from nicotask.kube import CANCEL_REQUESTED_BY, Conflict, NotFound
from nicotask.logs import task_context

from . import errors
from .cache import TaskCache, TaskRecord, record_of
from .store import Store

log = logging.getLogger(__name__)


class CancelDecision(enum.Enum):
    PATCH = "patch"  # set spec.cancel (and who asked)
    UNCHANGED = "unchanged"  # already Terminated, or cancel already requested: 202 as is
    FINISHED = "finished"  # Succeeded / Failed: 400


def task_status(obj: dict[str, Any]) -> api.TaskStatus:
    raw = (obj.get("status") or {}).get("status")
    try:
        return api.TaskStatus(raw) if raw else api.TaskStatus.PENDING
    except ValueError:
        return api.TaskStatus.UNKNOWN


def decide_cancel(status: api.TaskStatus, cancel_requested: bool) -> CancelDecision:
    if status == api.TaskStatus.TERMINATED:
        return CancelDecision.UNCHANGED
    if lifecycle.is_terminal(status):
        return CancelDecision.FINISHED
    if cancel_requested:
        return CancelDecision.UNCHANGED
    return CancelDecision.PATCH


def cancel_patch(resource_version: str, requested_by: str) -> dict[str, Any]:
    return {
        "metadata": {
            "resourceVersion": resource_version,
            "annotations": {CANCEL_REQUESTED_BY: requested_by[:1024]},
        },
        # The REST cancel is a hard terminate: it also escalates a graceful stop.
        "spec": {"cancel": True, "cancelMode": api.StopMode.TERMINATE.value},
    }


class TaskService:
    def __init__(self, store: Store, tasks: TaskCache, cancel_attempts: int = 5) -> None:
        self.store = store
        self.tasks = tasks
        self.cancel_attempts = cancel_attempts
        self.patches = 0
        self.conflicts = 0
        self._inflight: dict[str, asyncio.Task[bytes]] = {}

    async def find(self, uid: str, site_id: str) -> TaskRecord:
        return await self.tasks.find(uid.lower(), site_id)

    async def cancel(self, uid: str, site_id: str, requested_by: str) -> bytes:
        """The REST Task (JSON) to answer 202 with; raises 400/404/503."""
        rec = await self.find(uid, site_id)
        decision = decide_cancel(rec.status, rec.cancel)
        if decision == CancelDecision.FINISHED:
            raise errors.APIError(400, lifecycle.cannot_cancel_message(rec.uid, rec.status))
        if decision == CancelDecision.UNCHANGED:
            return rec.full
        flight = self._inflight.get(rec.uid)
        if flight is None:
            flight = asyncio.create_task(self._patch(rec, requested_by))
            self._inflight[rec.uid] = flight
            flight.add_done_callback(lambda _: self._inflight.pop(rec.uid, None))
        return await asyncio.shield(flight)

    async def _patch(self, rec: TaskRecord, requested_by: str) -> bytes:
        with task_context(rec.namespace, rec.name, rec.uid):
            return await self._patch_in_context(rec, requested_by)

    async def _patch_in_context(self, rec: TaskRecord, requested_by: str) -> bytes:
        for _ in range(self.cancel_attempts):
            try:
                obj = await self.store.patch_task(
                    rec.namespace, rec.name, cancel_patch(rec.resource_version, requested_by)
                )
            except NotFound:
                self.tasks.forget(rec.uid)
                raise errors.APIError(404, errors.TASK_NOT_FOUND.format(id=rec.uid)) from None
            except Conflict:
                self.conflicts += 1
                log.info("cancel %s: the cached copy was stale (409); reading it again", rec.uid)
                rec = await self._reread(rec)
                decision = decide_cancel(rec.status, rec.cancel)
                if decision == CancelDecision.FINISHED:
                    raise errors.APIError(
                        400, lifecycle.cannot_cancel_message(rec.uid, rec.status)
                    ) from None
                if decision == CancelDecision.UNCHANGED:
                    return rec.full
                continue
            self.patches += 1
            log.info("cancel requested by %s", requested_by)
            return self._record(obj, rec.uid).full
        raise errors.Unavailable("the task kept changing while cancelling; retry")

    async def _reread(self, rec: TaskRecord) -> TaskRecord:
        """One fresh GET after a conflict; 404 when the task is gone or was re-created."""
        obj = await self.store.get_task(rec.namespace, rec.name)
        if obj is None or (obj.get("metadata") or {}).get("uid") != rec.uid:
            self.tasks.forget(rec.uid)
            raise errors.APIError(404, errors.TASK_NOT_FOUND.format(id=rec.uid))
        return self._record(obj, rec.uid)

    def _record(self, obj: dict[str, Any], uid: str) -> TaskRecord:
        self.tasks.put(obj)
        rec = self.tasks.lookup(uid)
        rv = (obj.get("metadata") or {}).get("resourceVersion")
        if rec is None or rv != rec.resource_version:
            # The cache holds a newer copy, or this one does not parse: answer from this one.
            fresh = record_of(obj)
            if fresh is None:
                raise errors.APIError(404, errors.TASK_NOT_FOUND.format(id=uid))
            return fresh
        return rec
