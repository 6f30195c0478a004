"""The bench's graceful phase: which stopped tasks it waits for, and which are late."""

from __future__ import annotations

from typing import Any

from bench.graceful import is_late, unsettled
from bench.watch import TaskWatch


def task(name: str, status: str, stages: list[tuple[int, str]]) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "uid": f"uid-{name}"},
        "status": {
            "status": status,
            "report": {"stages": [{"number": n, "status": s} for n, s in stages]},
        },
    }


def watch_of(*objs: dict[str, Any]) -> TaskWatch:
    tw = TaskWatch.__new__(TaskWatch)  # no API client: only the recording is used
    tw.first_seen, tw.uids, tw.messages, tw.current, tw.stage_running = {}, {}, {}, {}, {}
    for i, obj in enumerate(objs):
        tw._record(obj, float(i))
    return tw


def test_a_task_whose_stage_2_started_is_late_and_not_waited_for() -> None:
    tw = watch_of(
        task("in-time", "Running", [(1, "running"), (2, "pending")]),
        task("late", "Running", [(1, "running"), (2, "pending")]),
        task("late", "Running", [(1, "completed"), (2, "running")]),
    )
    assert not is_late(tw, "in-time")
    assert is_late(tw, "late")
    assert tw.stage_running_at("late", 2) == 2.0
    assert unsettled(tw, ["in-time", "late"]) == ["in-time"]


def test_a_stop_in_stage_1_skips_stage_2_and_settles_on_terminated() -> None:
    tw = watch_of(
        task("a", "Running", [(1, "running"), (2, "pending")]),
        task("a", "Running", [(1, "completed"), (2, "skipped"), (101, "running")]),
    )
    assert not is_late(tw, "a")
    assert unsettled(tw, ["a"]) == ["a"]
    tw._record(task("a", "Terminated", [(1, "completed"), (2, "skipped"), (101, "completed")]), 3)
    assert unsettled(tw, ["a"]) == []
    assert not is_late(tw, "a")
