"""The operator's side of Temporal: start, terminate, read and list task workflows.

Every call answers in terms the operator can decide on (an enum, an outcome,
a list of closed executions), so the operator never interprets gRPC errors.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass
from typing import Any

from temporalio.client import (
    Client,
    WorkflowExecution,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
)
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import TerminatedError, WorkflowAlreadyStartedError
from temporalio.exceptions import TimeoutError as TemporalTimeoutError
from temporalio.service import RPCError, RPCStatusCode

from nicotask.api import TaskReportV1, TaskStatus, first_line_error
from nicotask.temporal.models import WORKFLOW_NAME, WorkflowInput, WorkflowOutcome

RPC_TIMEOUT = dt.timedelta(seconds=10)
# A query waits on a worker: short, and without an answer the caller does without.
QUERY_TIMEOUT = dt.timedelta(seconds=3)
LIST_PAGE_SIZE = 1000
# Temporal's own execution timeout is a backstop behind the workflow's in-code
# deadline (which fails the running stage cleanly and still returns an outcome).
EXECUTION_TIMEOUT_MARGIN = dt.timedelta(minutes=5)
MEMO_NAMESPACE = "namespace"
MEMO_NAME = "name"


class TemporalUnavailable(Exception):
    """Temporal could not be reached; the caller retries with backoff."""


def _unavailable(exc: RPCError) -> TemporalUnavailable:
    return TemporalUnavailable(first_line_error(str(exc)) or exc.status.name)


async def start_task_workflow(
    client: Client, inp: WorkflowInput, *, task_queue: str
) -> WorkflowHandle[Any, WorkflowOutcome]:
    """Start NicoTaskWorkflow for a task: id = task uid; a second start returns the same run."""
    return await client.start_workflow(
        WORKFLOW_NAME,
        inp,
        id=inp.task.uid,
        task_queue=task_queue,
        result_type=WorkflowOutcome,
        execution_timeout=dt.timedelta(seconds=inp.workflow_timeout_seconds)
        + EXECUTION_TIMEOUT_MARGIN,
        id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        # Lets the operator find the task of an execution it no longer indexes.
        memo={MEMO_NAMESPACE: inp.task.namespace, MEMO_NAME: inp.task.name},
    )


async def start_workflow(client: Client, task_queue: str, workflow_input: WorkflowInput) -> str:
    """Start the task's workflow once, whatever happened before; return its first run id.

    USE_EXISTING attaches to a running execution; REJECT_DUPLICATE refuses
    to run a closed task again (its first execution's id is returned then).
    """
    workflow_id = workflow_input.task.uid
    try:
        handle = await start_task_workflow(client, workflow_input, task_queue=task_queue)
    except WorkflowAlreadyStartedError:
        try:
            desc = await client.get_workflow_handle(workflow_id).describe(rpc_timeout=RPC_TIMEOUT)
        except RPCError as exc:
            raise _unavailable(exc) from exc
        return desc.run_id
    except RPCError as exc:
        raise _unavailable(exc) from exc
    return handle.first_execution_run_id or handle.result_run_id or ""


class TerminateResult(enum.Enum):
    TERMINATED = "terminated"  # Temporal confirmed: terminated (or, for a cancel, requested)
    ALREADY_CLOSED = "already_closed"  # it had finished first; read its outcome
    NEVER_STARTED = "never_started"  # no execution with this id exists


@dataclass(frozen=True)
class Observed:
    """What Temporal recorded for a task's execution."""

    running: bool
    status: TaskStatus | None = None
    message: str | None = None
    outcome: WorkflowOutcome | None = None


async def terminate(
    client: Client, workflow_id: str, first_run_id: str | None, reason: str
) -> TerminateResult:
    handle = client.get_workflow_handle(workflow_id, first_execution_run_id=first_run_id)
    try:
        await handle.terminate(reason=reason, rpc_timeout=RPC_TIMEOUT)
        return TerminateResult.TERMINATED
    except RPCError as exc:
        if exc.status != RPCStatusCode.NOT_FOUND:
            raise _unavailable(exc) from exc
    return await _why_not_found(client, workflow_id)


async def request_cancel(
    client: Client, workflow_id: str, first_run_id: str | None, reason: str
) -> TerminateResult:
    """Ask the workflow to stop gracefully (it handles the request: docs/cancel.md).

    TERMINATED here means the request reached a running execution; asking again is
    harmless. Temporal accepts a cancel request for an execution that already
    closed, so the execution is described after it: closed -> ALREADY_CLOSED.
    """
    handle = client.get_workflow_handle(workflow_id, first_execution_run_id=first_run_id)
    try:
        await handle.cancel(reason=reason, rpc_timeout=RPC_TIMEOUT)
        desc = await handle.describe(rpc_timeout=RPC_TIMEOUT)
    except RPCError as exc:
        if exc.status != RPCStatusCode.NOT_FOUND:
            raise _unavailable(exc) from exc
        return await _why_not_found(client, workflow_id)
    if desc.status == WorkflowExecutionStatus.RUNNING:
        return TerminateResult.TERMINATED
    return TerminateResult.ALREADY_CLOSED


async def current_report(client: Client, workflow_id: str) -> TaskReportV1 | None:
    """The running workflow's own report (its `report` query), or None if it cannot say
    (closed, no worker answering in time, Temporal unreachable)."""
    handle = client.get_workflow_handle(workflow_id)
    try:
        report = await handle.query("report", result_type=TaskReportV1, rpc_timeout=QUERY_TIMEOUT)
    except Exception:
        return None
    return report if isinstance(report, TaskReportV1) else None


async def _why_not_found(client: Client, workflow_id: str) -> TerminateResult:
    """NotFound covers "never existed" and "already completed": tell them apart."""
    try:
        await client.get_workflow_handle(workflow_id).describe(rpc_timeout=RPC_TIMEOUT)
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return TerminateResult.NEVER_STARTED
        raise _unavailable(exc) from exc
    return TerminateResult.ALREADY_CLOSED


async def observe(client: Client, workflow_id: str) -> Observed | None:
    """The execution's state and, once closed, its recorded outcome (None: no execution)."""
    handle = client.get_workflow_handle(workflow_id, result_type=WorkflowOutcome)
    try:
        desc = await handle.describe(rpc_timeout=RPC_TIMEOUT)
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return None
        raise _unavailable(exc) from exc
    if desc.status == WorkflowExecutionStatus.RUNNING:
        return Observed(running=True)
    try:
        outcome = await handle.result(follow_runs=False, rpc_timeout=RPC_TIMEOUT)
    except WorkflowFailureError as exc:
        return _observed_failure(exc)
    except RPCError as exc:
        raise _unavailable(exc) from exc
    return Observed(running=False, status=outcome.status, message=outcome.message, outcome=outcome)


def _observed_failure(exc: WorkflowFailureError) -> Observed:
    cause = exc.cause
    if isinstance(cause, TerminatedError):
        reason = cause.message or "terminated"
        return Observed(running=False, status=TaskStatus.TERMINATED, message=reason)
    if isinstance(cause, TemporalTimeoutError):
        return Observed(
            running=False,
            status=TaskStatus.FAILED,
            message="Workflow timed out before the rule finished",
        )
    return Observed(
        running=False,
        status=TaskStatus.FAILED,
        message=first_line_error(str(getattr(cause, "message", None) or cause or exc)),
    )


# ---- visibility: one query follows every execution ---------------------------


@dataclass(frozen=True)
class Execution:
    workflow_id: str
    run_id: str
    close_time: dt.datetime | None
    raw: WorkflowExecution

    async def task_ref(self) -> tuple[str, str] | None:
        """(namespace, name) of the task that started it, from the workflow's memo."""
        try:
            memo = await self.raw.memo()
        except Exception:
            return None
        namespace, name = memo.get(MEMO_NAMESPACE), memo.get(MEMO_NAME)
        if isinstance(namespace, str) and isinstance(name, str):
            return namespace, name
        return None


def _rfc3339(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _ours(task_queue: str) -> str:
    return f"WorkflowType = '{WORKFLOW_NAME}' AND TaskQueue = '{task_queue}'"


async def _list(client: Client, query: str) -> list[Execution]:
    out: list[Execution] = []
    try:
        async for ex in client.list_workflows(
            query, page_size=LIST_PAGE_SIZE, rpc_timeout=RPC_TIMEOUT
        ):
            out.append(Execution(ex.id, ex.run_id, ex.close_time, ex))
    except RPCError as exc:
        raise _unavailable(exc) from exc
    return out


def closed_since_query(task_queue: str, since: dt.datetime) -> str:
    return f"{_ours(task_queue)} AND CloseTime >= '{_rfc3339(since)}'"


def running_query(task_queue: str) -> str:
    return f"{_ours(task_queue)} AND ExecutionStatus = 'Running'"


async def closed_since(client: Client, task_queue: str, since: dt.datetime) -> list[Execution]:
    """Our executions that closed at or after `since` (visibility; may lag a little)."""
    return await _list(client, closed_since_query(task_queue, since))


async def running(client: Client, task_queue: str) -> list[Execution]:
    """Our executions that are running now (for the slow full reconcile)."""
    return await _list(client, running_query(task_queue))
