"""The operator's side of Temporal: start, terminate and read the task's workflow.

Every call answers in terms the lifecycle can decide on (an enum or an
outcome), so the handlers never interpret gRPC errors themselves.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass
from typing import Any

from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
)
from temporalio.exceptions import (
    TerminatedError,
    WorkflowAlreadyStartedError,
)
from temporalio.exceptions import (
    TimeoutError as TemporalTimeoutError,
)
from temporalio.service import RPCError, RPCStatusCode

from nicotask.api import TaskReportV1, TaskStatus, first_line_error
from nicotask.temporal.client import start_task_workflow
from nicotask.temporal.models import WorkflowInput, WorkflowOutcome

RPC_TIMEOUT = dt.timedelta(seconds=10)


class TemporalUnavailable(Exception):
    """Temporal could not be reached; the caller retries with backoff."""


def _unavailable(exc: RPCError) -> bool:
    return exc.status in (
        RPCStatusCode.UNAVAILABLE,
        RPCStatusCode.DEADLINE_EXCEEDED,
        RPCStatusCode.CANCELLED,
        RPCStatusCode.UNKNOWN,
        RPCStatusCode.INTERNAL,
        RPCStatusCode.RESOURCE_EXHAUSTED,
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
        desc = await client.get_workflow_handle(workflow_id).describe(rpc_timeout=RPC_TIMEOUT)
        return desc.run_id
    except RPCError as exc:
        raise TemporalUnavailable(str(exc)) from exc
    return handle.first_execution_run_id or handle.result_run_id or ""


class TerminateResult(enum.Enum):
    TERMINATED = "terminated"  # Temporal confirmed: the execution is now terminated
    ALREADY_CLOSED = "already_closed"  # it had finished first; read its outcome
    NEVER_STARTED = "never_started"  # no execution with this id exists


@dataclass
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
            if _unavailable(exc):
                raise TemporalUnavailable(str(exc)) from exc
            raise
    # NotFound covers "never existed" and "already completed": tell them apart.
    try:
        await client.get_workflow_handle(workflow_id).describe(rpc_timeout=RPC_TIMEOUT)
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return TerminateResult.NEVER_STARTED
        raise TemporalUnavailable(str(exc)) from exc
    return TerminateResult.ALREADY_CLOSED


async def observe(
    client: Client, workflow_id: str, wait: dt.timedelta | None = None
) -> Observed | None:
    """The execution's state; with `wait`, long-poll up to that long for it to close.

    Returns None when no execution exists.
    """
    handle = client.get_workflow_handle(workflow_id, result_type=WorkflowOutcome)
    try:
        desc = await handle.describe(rpc_timeout=RPC_TIMEOUT)
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return None
        raise TemporalUnavailable(str(exc)) from exc
    if desc.status == WorkflowExecutionStatus.RUNNING and wait is None:
        return Observed(running=True)
    try:
        if desc.status == WorkflowExecutionStatus.RUNNING:
            outcome = await _result_within(handle, wait or dt.timedelta(0))
            if outcome is None:
                return Observed(running=True)
        else:
            outcome = await handle.result(follow_runs=False, rpc_timeout=RPC_TIMEOUT)
    except WorkflowFailureError as exc:
        return _observed_failure(exc)
    except RPCError as exc:
        raise TemporalUnavailable(str(exc)) from exc
    return Observed(running=False, status=outcome.status, message=outcome.message, outcome=outcome)


async def _result_within(
    handle: WorkflowHandle[Any, WorkflowOutcome], wait: dt.timedelta
) -> WorkflowOutcome | None:
    import asyncio

    try:
        result: WorkflowOutcome = await asyncio.wait_for(
            handle.result(follow_runs=False), timeout=wait.total_seconds()
        )
    except TimeoutError:
        return None
    return result


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


def empty_report() -> TaskReportV1:
    return TaskReportV1(stages=[])
