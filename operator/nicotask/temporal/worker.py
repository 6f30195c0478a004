"""`nicotask worker`: the Temporal worker running NicoTaskWorkflow and its activities.

Task queue and concurrency come from settings (NICOTASK_TASK_QUEUE,
NICOTASK_WORKER_MAX_CONCURRENT_ACTIVITIES / _WORKFLOWS); progress writes are
local activities with slots of their own
(NICOTASK_WORKER_PROGRESS_MAX_CONCURRENT_ACTIVITIES). BMC endpoints are
checked against NICOTASK_WORKER_BMC_NETWORKS, Secrets are read only in
NICOTASK_NAMESPACES (all namespaces when empty). GET /healthz on
NICOTASK_WORKER_HEALTH_PORT answers 200 while the worker runs, 503 otherwise.
SIGTERM or SIGINT shuts the worker down gracefully: polling stops, running
activities get `graceful_shutdown_timeout` to finish, then are cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from datetime import timedelta

from temporalio.client import Client
from temporalio.worker import Interceptor, Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from nicotask.bmc_policy import EndpointPolicy
from nicotask.logs import configure_logging
from nicotask.redfish import RedfishDriverFactory, driver_factory
from nicotask.settings import Settings, get_settings
from nicotask.temporal.activities import TaskActivities, TaskStore
from nicotask.temporal.run_guard import TemporalRunGuard
from nicotask.temporal.workflows import NicoTaskWorkflow

log = logging.getLogger(__name__)

GRACEFUL_SHUTDOWN = timedelta(seconds=10)
PROGRESS_SLOTS = 50


def build_worker(
    client: Client,
    kube: TaskStore,
    *,
    task_queue: str,
    redfish: RedfishDriverFactory | None = None,
    bmc_policy: EndpointPolicy | None = None,
    namespaces: list[str] | None = None,
    max_concurrent_activities: int | None = None,
    max_concurrent_workflow_tasks: int | None = None,
    max_concurrent_progress: int = PROGRESS_SLOTS,
    cache_seconds: float = 5.0,
    graceful_shutdown_timeout: timedelta = GRACEFUL_SHUTDOWN,
    activities: TaskActivities | None = None,
    interceptors: Sequence[Interceptor] = (),
) -> Worker:
    """The worker for NicoTaskWorkflow; the client must use the pydantic data converter.

    Heartbeats use the SDK's throttling (0.8 x the heartbeat timeout); BMC
    resets are gated by a run guard through this client instead.
    """
    acts = activities or TaskActivities(
        kube, redfish, policy=bmc_policy, namespaces=namespaces or (), cache_seconds=cache_seconds
    )
    if acts.run_guard is None:
        acts.run_guard = TemporalRunGuard(client)
    return Worker(
        client,
        task_queue=task_queue,
        workflows=[NicoTaskWorkflow],
        workflow_runner=WORKFLOW_RUNNER,
        # publish_progress runs as a local activity, run_step_action as a plain one.
        activities=[acts.publish_progress, acts.run_step_action],
        max_concurrent_activities=max_concurrent_activities,
        # publish_progress as a local activity: slots of its own.
        max_concurrent_local_activities=max_concurrent_progress,
        max_concurrent_workflow_tasks=max_concurrent_workflow_tasks,
        graceful_shutdown_timeout=graceful_shutdown_timeout,
        interceptors=interceptors,
    )


# The sandbox re-imports every module a workflow uses for each new workflow
# run unless it is passed through. Our models are side-effect free and
# immutable at module level; re-importing them (pydantic schema building) cost
# the worker ~80% of its CPU in the bench's start burst. `nicotask/__init__`
# installs the lazy kubernetes-asyncio packages: passed through, it finds them
# installed at once instead of reading and parsing their `__init__`s for every
# run (14 -> 6 ms per new run). What is left per run is `nicotask`,
# `nicotask.temporal` and the workflow module itself, which the sandbox
# re-executes on purpose to isolate each run's module state.
WORKFLOW_RUNNER = SandboxedWorkflowRunner(
    restrictions=SandboxRestrictions.default.with_passthrough_modules(
        "nicotask.api",
        "nicotask.lazy_kubernetes",
        "nicotask.temporal.models",
        "nicotask.temporal.report",
        "kubernetes_asyncio",
        "pydantic",
        "pydantic_core",
        "annotated_types",
    )
)


def workflow_bytecode_missing(module_name: str = NicoTaskWorkflow.__module__) -> bool:
    """True when each new run would compile the workflow module from source: no
    bytecode cached for it, and Python told not to write any."""
    spec = sys.modules[module_name].__spec__
    cached = spec.cached if spec is not None else None
    return bool(sys.dont_write_bytecode and cached and not os.path.exists(cached))


async def serve_health(
    host: str, port: int, healthy: Callable[[], bool]
) -> asyncio.base_events.Server:
    """A tiny HTTP server: GET /healthz (or /readyz) -> 200 when healthy, else 503."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), timeout=5)
            while True:  # drain the headers
                line = await asyncio.wait_for(reader.readline(), timeout=5)
                if line in (b"\r\n", b"\n", b""):
                    break
            parts = request.decode("latin-1").split()
            path = parts[1] if len(parts) > 1 else ""
            if path.split("?")[0] in ("/healthz", "/readyz", "/livez"):
                ok = healthy()
                code, body = (200, b"ok\n") if ok else (503, b"worker not running\n")
            else:
                code, body = 404, b"not found\n"
            reason = {200: "OK", 404: "Not Found", 503: "Service Unavailable"}[code]
            writer.write(
                f"HTTP/1.1 {code} {reason}\r\nContent-Type: text/plain\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    return await asyncio.start_server(handle, host, port)


async def run_worker(settings: Settings, *, health_host: str = "0.0.0.0") -> int:
    from nicotask.kube import Kube, new_api_client
    from nicotask.temporal import metrics
    from nicotask.temporal.connection import connect

    api_client = await new_api_client(settings.kubeconfig, component="worker")
    try:
        runtime = metrics.worker_runtime(settings)
        meters = metrics.WorkerMetrics.of(runtime)
        client = await connect(settings, **({"runtime": runtime} if runtime else {}))
        probe = asyncio.create_task(
            metrics.probe_reachability(
                metrics.health_check(client), lambda ok: meters.temporal_reachable.set(int(ok))
            )
        )
        policy = EndpointPolicy.from_cidrs(settings.worker_bmc_networks)
        worker = build_worker(
            client,
            Kube(api_client),
            task_queue=settings.task_queue,
            redfish=metrics.metered_factory(driver_factory(policy), meters),
            interceptors=[metrics.TaskActivityInterceptor(meters)],
            bmc_policy=policy,
            namespaces=settings.namespaces,
            max_concurrent_activities=settings.worker_max_concurrent_activities,
            max_concurrent_workflow_tasks=settings.worker_max_concurrent_workflows,
            max_concurrent_progress=settings.worker_progress_max_concurrent_activities,
            cache_seconds=settings.worker_cache_seconds,
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        health = await serve_health(
            health_host, settings.worker_health_port, lambda: worker.is_running
        )
        log.info(
            "worker on task queue %s (Temporal %s, namespace %s); health on :%d",
            settings.task_queue,
            settings.temporal_address,
            settings.temporal_namespace,
            settings.worker_health_port,
        )
        running = asyncio.create_task(worker.run())
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait({running, stopper}, return_when=asyncio.FIRST_COMPLETED)
        rc = 0
        if stopper.done():
            log.info("shutting down the worker")
            await worker.shutdown()
        else:
            stopper.cancel()
        try:
            await running
        except Exception:
            log.exception("worker stopped with an error")
            rc = 1
        probe.cancel()
        health.close()
        await health.wait_closed()
        return rc
    finally:
        await api_client.close()


def worker_main(
    *,
    task_queue: str | None = None,
    health_port: int | None = None,
    log_level: str = "INFO",
    hard_exit: bool = True,
) -> int:
    """`nicotask worker [--task-queue Q] [--health-port N] [--log-level L]`.

    With `hard_exit` (the CLI), the process ends with os._exit once the
    worker stopped: the Temporal core's native threads can otherwise abort the
    interpreter's teardown ("PyGILState_Release ... must be current",
    temporalio/sdk-python#300), turning a clean SIGTERM into a crash.
    """
    settings = get_settings()
    configure_logging(settings.json_logs, level=log_level)
    if workflow_bytecode_missing():
        log.warning(
            "%s has no cached bytecode and PYTHONDONTWRITEBYTECODE is set: every new "
            "workflow run compiles it again; run `python -m compileall` on the package",
            NicoTaskWorkflow.__module__,
        )
    updates: dict[str, object] = {}
    if task_queue:
        updates["task_queue"] = task_queue
    if health_port is not None:
        updates["worker_health_port"] = health_port
    if updates:
        settings = settings.model_copy(update=updates)
    try:
        rc = asyncio.run(run_worker(settings))
    except KeyboardInterrupt:
        rc = 130
    if hard_exit:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(rc)
    return rc
