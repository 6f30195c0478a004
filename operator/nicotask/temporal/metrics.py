"""The worker's metrics and its per-task log context.

One Prometheus endpoint per worker (NICOTASK_WORKER_METRICS_PORT) serves both
the Temporal SDK's own metrics (`temporal_*`: polls, task slots, latencies,
request failures) and ours, because ours are recorded through the same
`temporalio.runtime.Runtime` metric meter:

  nicotask_worker_bmc_requests_total{action, outcome}   BMC requests
  nicotask_worker_bmc_request_duration_seconds{action}  their round trip
  nicotask_worker_step_duration_seconds{action_type, outcome}  run_step_action
  nicotask_temporal_reachable                          1 when Temporal answers health checks

`MeteredDriver` wraps each BMC driver the factory returns (one log line per
power request); `TaskActivityInterceptor` times step activities and runs every
activity inside `logs.task_context`, so each line it logs names the task.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, TypeVar

from temporalio.common import MetricMeter
from temporalio.exceptions import ApplicationError
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
)

from nicotask import logs
from nicotask.api import PowerAction, PowerState
from nicotask.redfish import (
    BmcAuthFailed,
    BmcError,
    BmcNotFound,
    BmcUnreachable,
    PowerDriver,
    RedfishDriverFactory,
)
from nicotask.settings import Settings

log = logging.getLogger("nicotask.worker.bmc")

T = TypeVar("T")

BMC_REQUESTS = "nicotask_worker_bmc_requests"  # `_total` is added by the exporter
BMC_DURATION = "nicotask_worker_bmc_request_duration_seconds"
STEP_DURATION = "nicotask_worker_step_duration_seconds"
TEMPORAL_REACHABLE = "nicotask_temporal_reachable"

BMC_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
STEP_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)


def worker_runtime(settings: Settings, host: str = "0.0.0.0") -> Runtime | None:
    """A Temporal Runtime exporting to Prometheus on the worker metrics port (0: none)."""
    if not settings.worker_metrics_port:
        return None
    return Runtime(
        telemetry=TelemetryConfig(
            metrics=PrometheusConfig(
                bind_address=f"{host}:{settings.worker_metrics_port}",
                counters_total_suffix=True,
                durations_as_seconds=True,
                histogram_bucket_overrides={BMC_DURATION: BMC_BUCKETS, STEP_DURATION: STEP_BUCKETS},
            )
        )
    )


class WorkerMetrics:
    """Our instruments on a Temporal metric meter (MetricMeter.noop when metrics are off)."""

    def __init__(self, meter: MetricMeter) -> None:
        self.bmc_requests = meter.create_counter(BMC_REQUESTS, "BMC requests by action and outcome")
        self.bmc_duration = meter.create_histogram_float(
            BMC_DURATION, "BMC request round trip by action", "s"
        )
        self.step_duration = meter.create_histogram_float(
            STEP_DURATION, "run_step_action duration by action type and outcome", "s"
        )
        self.temporal_reachable = meter.create_gauge(
            TEMPORAL_REACHABLE, "1 when the Temporal frontend answers health checks, else 0"
        )

    @classmethod
    def of(cls, runtime: Runtime | None) -> WorkerMetrics:
        return cls(runtime.metric_meter if runtime is not None else MetricMeter.noop)


# ---- BMC requests ------------------------------------------------------------


def bmc_outcome(exc: BaseException | None) -> str:
    """A small, fixed set of outcome labels."""
    if exc is None:
        return "ok"
    if isinstance(exc, BmcUnreachable):
        return "unreachable"
    if isinstance(exc, BmcAuthFailed):
        return "auth_failed"
    if isinstance(exc, BmcNotFound):
        return "not_found"
    if isinstance(exc, BmcError):
        return "bmc_error"
    return "error"


class MeteredDriver:
    """A PowerDriver that counts and times each request and logs each power request.

    Calls run in the activity's worker thread (asyncio.to_thread copies the
    context), so `logs.current_task()` names the task the request is for.
    """

    def __init__(self, inner: PowerDriver, metrics: WorkerMetrics, endpoint: str) -> None:
        self.inner = inner
        self.metrics = metrics
        self.endpoint = endpoint

    def _measure(self, action: str, fn: Callable[[], T], system_id: str | None) -> T:
        started = time.monotonic()
        error: BaseException | None = None
        try:
            return fn()
        except BaseException as exc:
            error = exc
            raise
        finally:
            elapsed = time.monotonic() - started
            outcome = bmc_outcome(error)
            self.metrics.bmc_requests.add(1, {"action": action, "outcome": outcome})
            self.metrics.bmc_duration.record(elapsed, {"action": action})
            # Power requests (resets) at INFO, one line each; reads at DEBUG (they poll).
            level = logging.INFO if action.startswith("reset") else logging.DEBUG
            if error is not None:
                level = logging.WARNING
            log.log(
                level,
                "BMC %s %s system=%s: %s in %.3fs%s",
                self.endpoint,
                action,
                system_id or "(only)",
                outcome,
                elapsed,
                f" ({error})" if error is not None else "",
            )

    def power_state(self, system_id: str | None) -> PowerState | None:
        return self._measure("power_state", lambda: self.inner.power_state(system_id), system_id)

    def reset(self, system_id: str | None, action: PowerAction) -> None:
        self._measure(
            f"reset_{action.value}", lambda: self.inner.reset(system_id, action), system_id
        )

    def allowed_resets(self, system_id: str | None) -> set[PowerAction]:
        return self._measure(
            "allowed_resets", lambda: self.inner.allowed_resets(system_id), system_id
        )


def metered_factory(factory: RedfishDriverFactory, metrics: WorkerMetrics) -> RedfishDriverFactory:
    """The driver factory, returning MeteredDrivers."""

    def make(endpoint: str, username: str, password: str, verify: bool | str) -> PowerDriver:
        return MeteredDriver(factory(endpoint, username, password, verify), metrics, endpoint)

    return make


# ---- activities: task context and step durations --------------------------------


def _task_of(args: Any) -> Any:
    """The TaskRef carried by our activity inputs (StepActivityInput, ProgressUpdate)."""
    first = args[0] if args else None
    return getattr(first, "task", None)


def step_outcome(exc: BaseException | None) -> str:
    if exc is None:
        return "ok"
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled"
    if isinstance(exc, ApplicationError) and exc.type:
        return exc.type
    return "error"


class _ActivityInbound(ActivityInboundInterceptor):
    def __init__(self, nxt: ActivityInboundInterceptor, metrics: WorkerMetrics) -> None:
        super().__init__(nxt)
        self.metrics = metrics

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        task = _task_of(input.args)
        if task is None:
            return await super().execute_activity(input)
        with logs.task_context(task.namespace, task.name, task.uid):
            action = getattr(input.args[0], "action", None)
            if action is None:
                return await super().execute_activity(input)
            return await self._timed(input, str(action.type))

    async def _timed(self, input: ExecuteActivityInput, action_type: str) -> Any:
        started = time.monotonic()
        error: BaseException | None = None
        try:
            return await super().execute_activity(input)
        except BaseException as exc:
            error = exc
            raise
        finally:
            self.metrics.step_duration.record(
                time.monotonic() - started,
                {"action_type": action_type, "outcome": step_outcome(error)},
            )


class TaskActivityInterceptor(Interceptor):
    """Worker interceptor: task fields on activity logs, step durations by action type."""

    def __init__(self, metrics: WorkerMetrics) -> None:
        self.metrics = metrics

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _ActivityInbound(next, self.metrics)


# ---- Temporal reachability --------------------------------------------------------


async def probe_reachability(
    check: Callable[[], Awaitable[Any]],
    report: Callable[[bool], None],
    *,
    interval: float = 15.0,
    timeout: float = 5.0,
) -> None:
    """Forever: report(True) when `check()` answers within `timeout`, else report(False)."""
    while True:
        try:
            await asyncio.wait_for(check(), timeout=timeout)
            ok = True
        except asyncio.CancelledError:
            raise
        except Exception:
            ok = False
        report(ok)
        await asyncio.sleep(interval)


def health_check(client: Any) -> Callable[[], Awaitable[Any]]:
    """Temporal's gRPC health check on a client's connection."""
    return lambda: client.service_client.check_health(timeout=timedelta(seconds=5))
