"""A NicoTask as the REST Task of contract/openapi.yaml.

One function maps the custom resource (spec, status, metadata.uid) to the
REST representation; the shim serves nothing else for a task.
"""

from __future__ import annotations

from typing import Any

from nicotask.api import NicoTask, Task, TaskStatus


def task_from_cr(obj: dict[str, Any]) -> NicoTask:
    """Parse a raw NicoTask object as read from the API server.

    Tolerates a missing or null status (a task nobody has reconciled yet) and
    fields of metadata we do not model.
    """
    body = dict(obj)
    if body.get("status") is None:
        body.pop("status", None)
    return NicoTask.model_validate(body)


def task_model(task: NicoTask | dict[str, Any], include_report: bool = True) -> Task:
    """The REST Task model of a NicoTask (a model or a raw object); `.wire()` is its JSON.

    - id is metadata.uid; status is Pending until the operator wrote one;
    - ruleId is always present, null until a rule was resolved;
    - created falls back to metadata.creationTimestamp, updated to created;
    - report only when `include_report` and the task has one.
    """
    cr = task if isinstance(task, NicoTask) else task_from_cr(task)
    status = cr.status
    task_id = cr.metadata.uid or status.id
    if not task_id:
        raise ValueError(f"NicoTask {cr.metadata.name!r} has no metadata.uid")
    created = status.created or cr.metadata.creation_timestamp
    return Task(
        id=task_id,
        status=status.status or TaskStatus.PENDING,
        description=cr.spec.description,
        message=status.message,
        rule_id=status.rule_id,
        started=status.started,
        finished=status.finished,
        created=created,
        updated=status.updated or created,
        report=status.report if include_report else None,
    )
