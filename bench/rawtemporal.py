"""The bench's own Temporal calls, kept out of the measured system's way.

They go to a namespace of their own (`nicotask-bench`, registered on the dev
server at the start of the run): the operator and the worker never see these
workflows (not even through visibility queries), and the Temporal RPC counts
of the system exclude this namespace. Workflows are started on a task queue
no worker polls and terminated at once, so nothing stays open.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from google.protobuf.duration_pb2 import Duration
from temporalio import activity, workflow
from temporalio.api.workflowservice.v1 import (
    DescribeNamespaceRequest,
    RegisterNamespaceRequest,
)
from temporalio.client import Client, WorkflowHandle
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import Worker

from .concurrency import bounded
from .measure import rate, summarize

BENCH_NAMESPACE = "nicotask-bench"
NOOP_WORKFLOW = "BenchNoop"  # a type nobody implements


async def connect(address: str, namespace: str = BENCH_NAMESPACE) -> Client:
    return await Client.connect(address, namespace=namespace)


async def register_namespace(address: str, timeout: float = 60.0) -> None:
    """Register the bench's namespace (harmless when it exists) and wait until a workflow
    can be started in it (the dev server picks up new namespaces after a few seconds)."""
    admin = await Client.connect(address)
    try:
        await admin.workflow_service.register_namespace(
            RegisterNamespaceRequest(
                namespace=BENCH_NAMESPACE,
                workflow_execution_retention_period=Duration(seconds=86400),
            )
        )
    except RPCError as exc:
        if exc.status != RPCStatusCode.ALREADY_EXISTS:
            raise
    await admin.workflow_service.describe_namespace(
        DescribeNamespaceRequest(namespace=BENCH_NAMESPACE)
    )
    client = await connect(address)
    deadline = time.monotonic() + timeout
    while True:
        try:
            handle = await client.start_workflow(
                NOOP_WORKFLOW, id=f"bench-probe-{uuid.uuid4().hex[:8]}", task_queue="bench-probe"
            )
            await handle.terminate(reason="bench namespace probe")
            return
        except RPCError:
            if time.monotonic() >= deadline:
                raise
            await asyncio.sleep(1.0)


async def throughput(
    client: Client, count: int, concurrency: int, timeout: float
) -> dict[str, Any]:
    """StartWorkflow then TerminateWorkflow of `count` workflows, `concurrency` in flight:
    calls per second of each (the ceiling the operator's starts and cancels compare to)."""
    queue = f"bench-raw-{uuid.uuid4().hex[:8]}"
    handles: dict[int, WorkflowHandle[Any, Any]] = {}
    start_lat: list[float] = []
    term_lat: list[float] = []

    async def start(i: int) -> None:
        t = time.perf_counter()
        handles[i] = await client.start_workflow(
            NOOP_WORKFLOW,
            id=f"{queue}-{i}",
            task_queue=queue,
            execution_timeout=timedelta(hours=1),
        )
        start_lat.append(time.perf_counter() - t)

    async def terminate(i: int) -> None:
        t = time.perf_counter()
        await handles[i].terminate(reason="bench raw throughput")
        term_lat.append(time.perf_counter() - t)

    t0 = time.monotonic()
    start_errors = await bounded(
        range(count), start, concurrency, "raw: StartWorkflow", t0 + timeout
    )
    start_s = time.monotonic() - t0
    t1 = time.monotonic()
    # Terminate every started one even past the deadline: nothing may stay open.
    term_errors = await bounded(sorted(handles), terminate, concurrency, "raw: TerminateWorkflow")
    term_s = time.monotonic() - t1
    return {
        "workflows": count,
        "concurrency": concurrency,
        "started": len(handles),
        "terminated": len(term_lat),
        "start_s": round(start_s, 3),
        "terminate_s": round(term_s, 3),
        "start_per_s": rate(len(start_lat), start_s),
        "terminate_per_s": rate(len(term_lat), term_s),
        "start_ms": summarize(start_lat, 1000),
        "terminate_ms": summarize(term_lat, 1000),
        "errors": len(start_errors) + len(term_errors),
        "namespace": BENCH_NAMESPACE,
    }


# ---- Temporal's own ceiling for a start that runs ---------------------------------
# A started NicoTask is Running only once a worker has run its first workflow
# task. This measures what Temporal and the least possible worker do for that:
# StartWorkflow, then a first workflow task that runs one local activity (which
# does nothing but count) and starts a timer, as NicoTaskWorkflow's first task
# does (it publishes the report and sleeps). The worker runs in the bench's
# process with the SDK's defaults and no sandbox: no Kubernetes, no operator.


@dataclass
class FirstTasks:
    """The workflows whose first workflow task ran; `all_seen` is set when `want` have."""

    want: int
    workflows: set[str] = field(default_factory=set)
    all_seen: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def seen(self) -> int:
        return len(self.workflows)

    @activity.defn(name="BenchFirstTaskDone")
    async def done(self) -> None:
        self.workflows.add(activity.info().workflow_id or "")  # a retry counts once
        if self.seen >= self.want:
            self.all_seen.set()


@workflow.defn(name="BenchFirstTask", sandboxed=False)
class FirstTaskWorkflow:
    @workflow.run
    async def run(self) -> None:
        await workflow.execute_local_activity(
            "BenchFirstTaskDone", start_to_close_timeout=timedelta(seconds=30)
        )
        await workflow.sleep(timedelta(hours=1))


async def first_task_throughput(
    client: Client, count: int, concurrency: int, timeout: float
) -> dict[str, Any]:
    """StartWorkflow of `count` workflows, `concurrency` in flight, until each has run
    its first workflow task on a worker in this process; then all are terminated."""
    queue = f"bench-first-{uuid.uuid4().hex[:8]}"
    counter = FirstTasks(want=count)
    handles: dict[int, WorkflowHandle[Any, Any]] = {}

    async def start(i: int) -> None:
        handles[i] = await client.start_workflow(
            FirstTaskWorkflow.run,
            id=f"{queue}-{i}",
            task_queue=queue,
            execution_timeout=timedelta(hours=1),
        )

    async def terminate(i: int) -> None:
        with contextlib.suppress(RPCError):
            await handles[i].terminate(reason="bench first-task ceiling")

    worker = Worker(
        client, task_queue=queue, workflows=[FirstTaskWorkflow], activities=[counter.done]
    )
    ran_s: float | None = None
    async with worker:
        t0 = time.monotonic()
        errors = await bounded(
            range(count), start, concurrency, "raw: StartWorkflow + first task", t0 + timeout
        )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                counter.all_seen.wait(), max(1.0, t0 + timeout - time.monotonic())
            )
            ran_s = time.monotonic() - t0
        await bounded(sorted(handles), terminate, concurrency)
    return {
        "workflows": count,
        "first_tasks": counter.seen,
        "seconds": None if ran_s is None else round(ran_s, 3),
        "per_s": None if ran_s is None else rate(counter.seen, ran_s),
        "errors": len(errors),
        "task_queue": queue,
    }
