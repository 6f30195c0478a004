"""Prometheus metrics of the operator."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from nicotask.api import FINISHED_STATUS_VALUES, TaskStatus

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.tasks = Gauge(
            "nicotask_tasks",
            "Live NicoTasks watched by this operator (its shard), by status",
            ["status"],
            registry=self.registry,
        )
        self.finished_total = Counter(
            "nicotask_finished_total",
            "Terminal statuses written by this operator",
            ["status"],
            registry=self.registry,
        )
        self.cancel_latency = Histogram(
            "nicotask_cancel_latency_seconds",
            "From spec.cancel seen by the operator to Terminated written",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.terminate_rpc = Histogram(
            "nicotask_terminate_rpc_seconds",
            "Temporal TerminateWorkflow round trip",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.temporal_reachable = Gauge(
            "nicotask_temporal_reachable",
            "1 when the Temporal frontend answers health checks, else 0",
            registry=self.registry,
        )
        self.cancel_pending_oldest = Gauge(
            "nicotask_cancel_pending_oldest_seconds",
            "Age of the oldest cancel not yet carried out (CancelPending), 0 when none",
            registry=self.registry,
        )
        self.cancel_pending_oldest.set_function(self._oldest_cancel_pending)
        self._status_by_uid: dict[str, TaskStatus] = {}
        self._cancel_pending_since: dict[str, float] = {}

    def finished(self, status: TaskStatus) -> None:
        self.finished_total.labels(status=status.value).inc()

    def observe_cancel_pending(self, uid: str, since: float | None) -> None:
        """A task's CancelPending state from its events: since = cancelRequestedAt as a Unix
        time while the cancel is not carried out; None once it is (or the task is gone)."""
        if since is None:
            self._cancel_pending_since.pop(uid, None)
        else:
            self._cancel_pending_since[uid] = since

    def _oldest_cancel_pending(self) -> float:
        if not self._cancel_pending_since:
            return 0.0
        return max(0.0, time.time() - min(self._cancel_pending_since.values()))

    def observe_task(self, uid: str, status: TaskStatus | None) -> None:
        """Keep the per-status gauge true from the stream of task events (None: deleted)."""
        if status is None:
            self._cancel_pending_since.pop(uid, None)
        previous = self._status_by_uid.pop(uid, None)
        if previous is not None:
            self.tasks.labels(status=previous.value).dec()
        if status is not None:
            self._status_by_uid[uid] = status
            self.tasks.labels(status=status.value).inc()


def cancel_pending_since(obj: Mapping[str, Any]) -> float | None:
    """For observe_cancel_pending, from a raw NicoTask: the Unix time of its cancel request
    while the task is not finished (the cancel is not carried out yet), else None.

    To wire in the task event handler: `metrics.observe_cancel_pending(uid,
    cancel_pending_since(obj))` (and observe_task(uid, None) on DELETED drops it)."""
    status = obj.get("status") or {}
    requested = status.get("cancelRequestedAt")
    if not requested or status.get("status") in FINISHED_STATUS_VALUES:
        return None
    try:
        return datetime.fromisoformat(str(requested).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
