"""The operator's start-up check of its Temporal settings.

Before kopf serves /healthz (the readiness and liveness probe) and before any
handler runs, the operator asks its Temporal what it will depend on:

1. the frontend at NICOTASK_TEMPORAL_ADDRESS answers;
2. the namespace NICOTASK_TEMPORAL_NAMESPACE exists and may be described;
3. the namespace's visibility answers the follower's two queries (operator/
   follower.py: `... AND CloseTime >= '...'` and `... AND ExecutionStatus =
   'Running'`, built by temporal/control.py), which need the system search
   attributes WorkflowType, TaskQueue, CloseTime and ExecutionStatus
   (advanced visibility: SQL on PostgreSQL 12+, MySQL 8 or SQLite, or
   Elasticsearch), and the right to list the namespace's workflows.

A problem is logged as one error line that names the setting to change (no
stack trace) and the check is tried again, with backoff, until it passes: the
operator stays unready meanwhile (a Temporal that comes up later, or a
namespace registered later, needs no restart).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from nicotask.api import first_line_error
from nicotask.settings import Settings
from nicotask.temporal.connection import connect
from nicotask.temporal.control import RPC_TIMEOUT, closed_since_query, running_query

log = logging.getLogger("nicotask.operator")

# How often one unchanged problem is logged again while the operator waits.
REPEAT_SECONDS = 60.0
MAX_BACKOFF_SECONDS = 15.0

_DENIED = {RPCStatusCode.PERMISSION_DENIED, RPCStatusCode.UNAUTHENTICATED}
_UNSUPPORTED = {
    RPCStatusCode.INVALID_ARGUMENT,
    RPCStatusCode.UNIMPLEMENTED,
    RPCStatusCode.FAILED_PRECONDITION,
}


@dataclass(frozen=True)
class Problem:
    """What is wrong, as one line, and the setting that fixes it."""

    setting: str
    message: str

    def line(self) -> str:
        return f"Temporal check failed ({self.setting}): {self.message}"


def _why(exc: BaseException) -> str:
    return first_line_error(str(exc)) or type(exc).__name__


def _credentials(settings: Settings) -> str:
    if settings.temporal_api_key is not None:
        return "NICOTASK_TEMPORAL_API_KEY"
    if settings.temporal_tls_cert_file:
        return "NICOTASK_TEMPORAL_TLS_CERT_FILE"
    return "NICOTASK_TEMPORAL_API_KEY"


def _unreachable(settings: Settings, why: str) -> Problem:
    return Problem(
        "NICOTASK_TEMPORAL_ADDRESS",
        f"no Temporal frontend answers at {settings.temporal_address} ({why}); set "
        "NICOTASK_TEMPORAL_ADDRESS to the frontend's host:port (and NICOTASK_TEMPORAL_TLS=true "
        "if it serves TLS)",
    )


async def check_temporal(settings: Settings, client: Client) -> Problem | None:
    """None when the operator can work with this Temporal, else the first problem."""
    namespace, address = settings.temporal_namespace, settings.temporal_address
    try:
        await client.workflow_service.describe_namespace(
            DescribeNamespaceRequest(namespace=namespace), retry=False, timeout=RPC_TIMEOUT
        )
    except RuntimeError as exc:  # "Failed client connect": refused, no such host, TLS
        return _unreachable(settings, _why(exc))
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return Problem(
                "NICOTASK_TEMPORAL_NAMESPACE",
                f"namespace {namespace!r} does not exist at {address}; set "
                "NICOTASK_TEMPORAL_NAMESPACE to a registered namespace, or register it "
                f"(temporal operator namespace create {namespace} --retention 72h)",
            )
        if exc.status in _DENIED:
            return Problem(
                _credentials(settings),
                f"not allowed to describe namespace {namespace!r} at {address} "
                f"({_why(exc)}); give the operator's credentials access to it",
            )
        return _unreachable(settings, _why(exc))
    since = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
    for query in (
        running_query(settings.task_queue),
        closed_since_query(settings.task_queue, since),
    ):
        try:
            async for _ in client.list_workflows(
                query, page_size=1, limit=1, rpc_timeout=RPC_TIMEOUT
            ):
                break
        except RPCError as exc:
            if exc.status in _DENIED:
                return Problem(
                    _credentials(settings),
                    f"not allowed to list the workflows of namespace {namespace!r} "
                    f"({_why(exc)}); the operator's follower lists them: give its "
                    "credentials ListWorkflowExecutions on the namespace",
                )
            if exc.status in _UNSUPPORTED:
                return Problem(
                    "NICOTASK_TEMPORAL_NAMESPACE",
                    f"the visibility of namespace {namespace!r} at {address} cannot answer "
                    f"the follower's query [{query}] ({_why(exc)}); the operator needs "
                    "advanced visibility with the system search attributes WorkflowType, "
                    "TaskQueue, CloseTime and ExecutionStatus (docs/operations.md): point "
                    "NICOTASK_TEMPORAL_ADDRESS/NICOTASK_TEMPORAL_NAMESPACE at a namespace "
                    "on such a store",
                )
            if exc.status == RPCStatusCode.NOT_FOUND:  # deleted between the two calls
                return Problem(
                    "NICOTASK_TEMPORAL_NAMESPACE",
                    f"namespace {namespace!r} does not exist at {address}: {_why(exc)}",
                )
            return _unreachable(settings, _why(exc))
    return None


async def wait_until_usable(
    settings: Settings,
    temporal: Callable[[], Awaitable[Client]] | None = None,
    *,
    backoff: float = 1.0,
    repeat: float = REPEAT_SECONDS,
) -> None:
    """Check until it passes; log each problem as one line (again every `repeat` s)."""

    async def default_client() -> Client:
        return await connect(settings, lazy=True)

    get_client = temporal or default_client
    last: Problem | None = None
    last_logged = 0.0
    delay = backoff
    while True:
        try:
            client = await get_client()
            problem = await check_temporal(settings, client)
        except RPCError as exc:
            problem = _unreachable(settings, _why(exc))
        except Exception as exc:  # a bad address, TLS files or API key: no stack trace
            problem = Problem(
                "NICOTASK_TEMPORAL_ADDRESS",
                f"cannot connect to Temporal at {settings.temporal_address}: {_why(exc)}",
            )
        if problem is None:
            if last is not None:
                log.info(
                    "Temporal check passed: %s namespace %s",
                    settings.temporal_address,
                    settings.temporal_namespace,
                )
            return
        now = time.monotonic()
        if problem != last or now - last_logged >= repeat:
            log.error("%s", problem.line())
            last, last_logged = problem, now
        await asyncio.sleep(delay)
        delay = min(delay * 2, MAX_BACKOFF_SECONDS)
