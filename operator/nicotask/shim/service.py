"""What the routes do, in upstream's check order: find, decide on a fresh read, patch.

`decide_cancel` is pure; `cancel_task` runs read -> decide -> conditional
merge patch, repeating on conflict, so any number of concurrent cancels of
one task produce exactly one patch.
"""

from __future__ import annotations

import asyncio
import enum
from typing import Any

from nicotask import api, state
from nicotask.kube import CANCEL_REQUESTED_BY, Conflict

from . import errors
from .index import TaskIndex
from .store import Store


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


def decide_cancel(obj: dict[str, Any]) -> CancelDecision:
    status = task_status(obj)
    if status == api.TaskStatus.TERMINATED:
        return CancelDecision.UNCHANGED
    if state.is_terminal(status):
        return CancelDecision.FINISHED
    if (obj.get("spec") or {}).get("cancel") is True:
        return CancelDecision.UNCHANGED
    return CancelDecision.PATCH


def cancel_patch(obj: dict[str, Any], requested_by: str) -> dict[str, Any]:
    return {
        "metadata": {
            "resourceVersion": obj["metadata"]["resourceVersion"],
            "annotations": {CANCEL_REQUESTED_BY: requested_by[:1024]},
        },
        "spec": {"cancel": True},
    }


class TaskService:
    def __init__(self, store: Store, index: TaskIndex, cancel_attempts: int = 50) -> None:
        self.store = store
        self.index = index
        self.cancel_attempts = cancel_attempts
        self.patches = 0

    async def find(self, uid: str, site_id: str) -> dict[str, Any]:
        """The task with metadata.uid == uid in site `site_id`, read fresh; else 404."""
        uid = uid.lower()
        entry = self.index.lookup(uid)
        if entry is None:
            await self.index.refresh()
            entry = self.index.lookup(uid)
        obj = None
        if entry is not None and self.store.serves(entry.namespace):
            obj = await self.store.get_task(entry.namespace, entry.name)
            if obj is None or obj.get("metadata", {}).get("uid") != uid:
                self.index.forget(uid, entry)
                obj = None
        if obj is None or (obj.get("spec") or {}).get("siteId", "").lower() != site_id.lower():
            raise errors.APIError(404, errors.TASK_NOT_FOUND.format(id=uid))
        return obj

    async def cancel(self, uid: str, site_id: str, requested_by: str) -> dict[str, Any]:
        """Cancel on a fresh read; returns the last known object (202), or raises 400/404."""
        for attempt in range(self.cancel_attempts):
            obj = await self.find(uid, site_id)
            decision = decide_cancel(obj)
            if decision == CancelDecision.FINISHED:
                raise errors.APIError(
                    400, state.cannot_cancel_message(uid.lower(), task_status(obj))
                )
            if decision == CancelDecision.UNCHANGED:
                return obj
            meta = obj["metadata"]
            try:
                patched = await self.store.patch_task(
                    meta["namespace"], meta["name"], cancel_patch(obj, requested_by)
                )
            except Conflict:
                await asyncio.sleep(min(0.01 * attempt, 0.2))
                continue
            self.patches += 1
            return patched
        raise errors.Unavailable("the task kept changing while cancelling; retry")
