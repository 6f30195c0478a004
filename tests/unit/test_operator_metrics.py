"""The operator's CancelPending age gauge (fed from task events)."""

from __future__ import annotations

import time

from prometheus_client import generate_latest

from nicotask.api import TaskStatus
from nicotask.metrics import Metrics, cancel_pending_since


def _value(m: Metrics, name: str) -> float:
    for line in generate_latest(m.registry).decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not exported")


def test_cancel_pending_since() -> None:
    running = {"status": {"status": "Running", "cancelRequestedAt": "2026-01-01T00:00:00Z"}}
    assert cancel_pending_since(running) == 1767225600.0
    assert cancel_pending_since({"status": {"status": "Running"}}) is None
    done = {"status": {"status": "Terminated", "cancelRequestedAt": "2026-01-01T00:00:00Z"}}
    assert cancel_pending_since(done) is None
    assert cancel_pending_since({}) is None
    assert cancel_pending_since({"status": {"cancelRequestedAt": "yesterday"}}) is None


def test_oldest_cancel_pending_age() -> None:
    m = Metrics()
    name = "nicotask_cancel_pending_oldest_seconds"
    assert _value(m, name) == 0
    now = time.time()
    m.observe_cancel_pending("a", now - 100)
    m.observe_cancel_pending("b", now - 10)
    assert 100 <= _value(m, name) < 200
    m.observe_cancel_pending("a", None)  # carried out
    assert 10 <= _value(m, name) < 100
    m.observe_task("b", TaskStatus.RUNNING)
    m.observe_task("b", None)  # deleted
    assert _value(m, name) == 0
    assert _value(m, "nicotask_temporal_reachable") == 0
