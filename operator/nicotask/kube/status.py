"""The conditional status writer: every status write of the operator, and the
worker's progress patch.

Every operator status write goes through `update_task_status`: it reads the
object (or takes a copy just read), lets a pure function decide the new status,
refuses any move out of a terminal state, and writes with the resourceVersion
it read. A conflict means somebody else wrote in between, so it reads again
and decides again. The worker's progress write (`json_patch_task_status`) is
one JSON patch made safe by the CRD's CEL rules and a test of the uid.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from nicotask import api, lifecycle
from nicotask.api import TASKS

from .errors import Conflict, NotFound
from .objects import JSON_PATCH, Objects

__all__ = ["TaskStatusWriter"]


class TaskStatusWriter(Objects):
    """The status writes of NicoTasks."""

    async def replace_task_status(
        self, task: api.NicoTask, status: api.NicoTaskStatus
    ) -> api.NicoTask:
        """Write the status subresource, conditional on the resourceVersion we read."""
        body = {
            "apiVersion": api.API_VERSION,
            "kind": api.TASK_RESOURCE.kind,
            "metadata": {
                "name": task.metadata.name,
                "namespace": task.metadata.namespace,
                "resourceVersion": task.metadata.resource_version,
            },
            "spec": task.spec.wire(),
            "status": status.wire(),
        }
        obj = await self.replace_status(
            TASKS, task.metadata.name, body, task.metadata.namespace or ""
        )
        return api.NicoTask.model_validate(obj)

    async def update_task_status(
        self,
        namespace: str,
        name: str,
        decide: Callable[[api.NicoTask], api.NicoTaskStatus | None],
        *,
        uid: str | None = None,
        attempts: int = 10,
        current: api.NicoTask | None = None,
    ) -> tuple[api.NicoTask, bool]:
        """Read, decide, write conditionally; repeat on conflict.

        `decide` gets the fresh task and returns the new status, or None to
        leave it. A decision that would leave a terminal state, or move the
        status backwards, is dropped (lifecycle.allowed_transition). With `uid`,
        an object recreated under the same name is left alone. With `current`
        (a task just read), the first attempt decides on it without a GET;
        if it is stale, the write conflicts and the loop reads fresh (no sleep:
        the read is what changes the outcome).
        Returns the task as stored and whether this call wrote it.
        """
        for _ in range(attempts):
            task = current if current is not None else await self.get_task(namespace, name)
            current = None
            if uid is not None and task.metadata.uid != uid:
                raise NotFound(f"nicotask {namespace}/{name} with uid {uid}")
            new_status = decide(task)
            if new_status is None or not lifecycle.allowed_transition(
                task.status.status, new_status.status
            ):
                return task, False
            new_status.updated = api.utcnow()
            try:
                return await self.replace_task_status(task, new_status), True
            except Conflict:
                continue  # somebody wrote in between: read the newer copy, decide again
        raise Conflict(f"nicotask {namespace}/{name}: status write kept conflicting")

    async def json_patch_task_status(
        self, namespace: str, name: str, ops: list[dict[str, Any]]
    ) -> None:
        """Apply a JSON patch (RFC 6902) to the status subresource: one call.

        A `test` op on /metadata/uid makes it apply to that very object only
        (a merge patch cannot: the status subresource drops metadata). The
        CRD's CEL rules refuse what they forbid. Refused (422) carries the
        API server's message: a failed test, a missing path, or a rule.
        The stored object it answers is not parsed: the worker's progress write
        needs only whether it applied.
        """
        await self.patch_unread(TASKS, name, ops, namespace, JSON_PATCH, status=True)
