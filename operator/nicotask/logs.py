"""Logging for the three processes: plain text or one JSON object per line
(NICOTASK_JSON_LOGS), and the task's namespace, name and uid on every line
about a task.

A line is "about a task" when it is logged
- inside `task_context(namespace, name, uid)` (a contextvar: it follows the
  code into awaited coroutines and into `asyncio.to_thread`, so the worker's
  activity logs and BMC request lines carry it without passing it around), or
- through `task_logger(log, namespace, name, uid)` (a LoggerAdapter, for code
  that handles many tasks in one coroutine, like the operator's handlers), or
- with `extra={"namespace": ..., "task_name": ..., "uid": ...}` (a LogRecord's
  `name` is its logger's).
`TaskFieldsFilter`, installed on the handler by `configure_logging`, copies the
context onto each record; the formatters print the fields.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import sys
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class TaskRef:
    namespace: str
    name: str
    uid: str


_current_task: contextvars.ContextVar[TaskRef | None] = contextvars.ContextVar(
    "nicotask_task", default=None
)


def current_task() -> TaskRef | None:
    return _current_task.get()


@contextlib.contextmanager
def task_context(namespace: str, name: str, uid: str) -> Iterator[TaskRef]:
    """Every line logged in this block (and in tasks/threads started from it) names the task."""
    ref = TaskRef(namespace, name, uid)
    token = _current_task.set(ref)
    try:
        yield ref
    finally:
        _current_task.reset(token)


class TaskLoggerAdapter(logging.LoggerAdapter):
    """A logger whose every line names one task (explicit fields win over the context)."""

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        kwargs["extra"] = {**(self.extra or {}), **(kwargs.get("extra") or {})}
        return msg, kwargs


def task_logger(log: logging.Logger, namespace: str, name: str, uid: str) -> TaskLoggerAdapter:
    """`task_logger(log, ns, name, uid).info(...)`: the line carries namespace, name and uid."""
    return TaskLoggerAdapter(log, {"namespace": namespace, "task_name": name, "uid": uid})


# kopf's module holding the cause of the handler being run.
KOPF_EXECUTION = "kopf._core.actions.execution"


def _kopf_object() -> dict[str, Any] | None:
    """The object of the kopf handler being run (kopf keeps its cause in a contextvar), so
    the operator's lines name their task without each handler entering task_context.

    Only when kopf is loaded already (the operator): a log line never imports. In the
    worker, an import here ran inside Temporal's workflow sandbox (a workflow's log
    line), which re-imports kopf for each run: seconds on a loaded machine, past the
    deadlock detector's 2 s, and the workflow task failed; the cache eviction that
    followed could not finish either (the thread was still importing: "Eviction
    processed, but N tasks remain"), and the task stayed Running until the worker
    restarted (found by the fault soak)."""
    execution = sys.modules.get(KOPF_EXECUTION)
    cause_var = getattr(execution, "cause_var", None)
    if cause_var is None:  # kopf not loaded (worker, shim) or moved: no fields
        return None
    cause = cause_var.get(None)
    extra = getattr(getattr(cause, "logger", None), "extra", None) or {}
    ref = extra.get("k8s_ref")
    return ref if isinstance(ref, dict) else None


class TaskFieldsFilter(logging.Filter):
    """Adds namespace/task_name/uid to records that do not carry them: from task_context,
    from kopf's per-object logger (`k8s_ref`), or from the kopf handler being run."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "uid", None) is not None:
            return True
        ref = _current_task.get()
        if ref is not None:
            record.namespace, record.task_name, record.uid = ref.namespace, ref.name, ref.uid
            return True
        obj = getattr(record, "k8s_ref", None) or _kopf_object()
        if isinstance(obj, dict) and obj.get("kind", "NicoTask") == "NicoTask" and obj.get("uid"):
            record.namespace = obj.get("namespace")
            record.task_name = obj.get("name")
            record.uid = obj["uid"]
        return True


def task_fields(record: logging.LogRecord) -> dict[str, str]:
    """The task fields of a record, from the context filter or from `extra=`."""
    uid = getattr(record, "uid", None)
    if uid is None:
        return {}
    out = {
        "namespace": getattr(record, "namespace", None),
        "name": getattr(record, "task_name", None),
        "uid": uid,
    }
    return {k: str(v) for k, v in out.items() if v is not None}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message (+ task fields, exception)."""

    def format(self, record: logging.LogRecord) -> str:
        body: dict[str, Any] = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        body.update(task_fields(record))
        if record.exc_info:
            body["exc"] = self.formatException(record.exc_info)
        return json.dumps(body)


class TextFormatter(logging.Formatter):
    """`time LEVEL logger: message [namespace/name uid=...]`."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = task_fields(record)
        if fields:
            where = f"{fields.get('namespace', '?')}/{fields.get('name', '?')}"
            text += f" [{where} uid={fields['uid']}]"
        return text


def configure_logging(json_logs: bool, verbose: bool = False, level: str | None = None) -> None:
    """The root handler of a process: JSON or text, with the task fields filter."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if json_logs else TextFormatter())
    handler.addFilter(TaskFieldsFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper() if level else (logging.DEBUG if verbose else logging.INFO))
    logging.getLogger("kopf.objects").setLevel(logging.WARNING if not verbose else logging.DEBUG)
    logging.getLogger("kubernetes_asyncio").setLevel(logging.WARNING)


def uvicorn_log_config() -> dict[str, Any]:
    """uvicorn's loggers through the root handler (so the shim's lines share one format)."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "loggers": {
            name: {"handlers": [], "propagate": True}
            for name in ("uvicorn", "uvicorn.error", "uvicorn.access")
        },
    }
