"""Events: a core/v1 Event on a task, best effort."""

from __future__ import annotations

import logging
from typing import Any

from nicotask import api

from .errors import ApiException, KubeError, read_body
from .objects import Objects

log = logging.getLogger(__name__)

__all__ = ["EventPoster"]


class EventPoster(Objects):
    """`create_event`: an Event on a NicoTask."""

    async def create_event(
        self,
        task: api.NicoTask,
        reason: str,
        message: str,
        *,
        warning: bool = False,
        component: str = "nicotask-operator",
    ) -> None:
        """A core/v1 Event on the task; best effort (events are advisory).

        Posted raw, its answer read but not parsed (parsing it into the generated
        models, timestamps through dateutil, was a tenth of the operator's CPU in
        a burst of starts)."""
        namespace = task.metadata.namespace or ""
        now = api.rfc3339(api.utcnow())
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{task.metadata.name}.", "namespace": namespace},
            "involvedObject": {
                "apiVersion": api.API_VERSION,
                "kind": api.TASK_RESOURCE.kind,
                "name": task.metadata.name,
                "namespace": namespace,
                "uid": task.metadata.uid,
            },
            "reason": reason,
            "message": message[:1024],
            "type": "Warning" if warning else "Normal",
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
            "source": {"component": component},
            "reportingComponent": component,
        }
        try:
            post: Any = self.core.create_namespaced_event  # typed for the model, takes JSON
            resp = await post(namespace, event, _preload_content=False)
            await read_body(resp, f"event on {task.metadata.name}")
        except (ApiException, KubeError) as exc:  # advisory only
            log.warning("could not record event %s on %s: %s", reason, task.metadata.name, exc)
