"""When a finished task may be deleted: from the model and from the stored JSON alike."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from nicotask.api import NicoTask
from nicotask.operator.retention import due_at, raw_due_at

FINISHED = "2026-01-01T12:00:00.000000Z"
AT = dt.datetime(2026, 1, 1, 12, tzinfo=dt.UTC)


def _raw(status: str, ttl: int | None = None, **times: str) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "siteId": "660e8400-e29b-41d4-a716-446655440000",
        "rackRef": "rack-1",
        "operation": "PowerOn",
    }
    if ttl is not None:
        spec["ttlSecondsAfterFinished"] = ttl
    return {
        "metadata": {"name": "t", "namespace": "ns", "uid": "u"},
        "spec": spec,
        "status": {"status": status, **times},
    }


@pytest.mark.parametrize(
    ("raw", "default", "expected"),
    [
        (_raw("Succeeded", 30, finished=FINISHED), None, AT + dt.timedelta(seconds=30)),
        (_raw("Failed", finished=FINISHED), 60, AT + dt.timedelta(seconds=60)),
        (_raw("Terminated", 0, finished=FINISHED), 60, AT),  # the task's own TTL wins
        (_raw("Succeeded", finished=FINISHED), None, None),  # no TTL anywhere: keep
        (_raw("Terminated", 5, updated=FINISHED), None, AT + dt.timedelta(seconds=5)),
        (_raw("Succeeded", 5), None, None),  # no time to count from
    ],
)
def test_raw_and_model_agree(raw: dict[str, Any], default: int | None, expected: Any) -> None:
    assert raw_due_at(raw, default) == expected
    assert due_at(NicoTask.model_validate(raw), default) == expected


def test_a_live_task_is_never_due() -> None:
    assert due_at(NicoTask.model_validate(_raw("Running", 1, finished=FINISHED)), 1) is None


def test_an_unreadable_time_keeps_the_task() -> None:
    assert raw_due_at(_raw("Succeeded", 1, finished="yesterday"), None) is None
