"""kubectl nico: the report table, --for and --timeout parsing, wait verdicts, flag parsing."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from nicotask import api, state
from nicotask.kubectl_nico import cli as kubectl_plugin
from nicotask.kubectl_nico.common import PluginError, normalize_for, parse_timeout, wait_verdict
from nicotask.kubectl_nico.report import format_duration, render_report

T0 = dt.datetime(2025, 6, 1, 10, 0, 0, tzinfo=dt.UTC)


def at(seconds: int) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def make_task(**spec: Any) -> api.NicoTask:
    return api.NicoTask(
        metadata=api.ObjectMeta(
            name="power-on-rack-1", namespace="default",
            uid="3f2a3c1e-8d2b-4a55-9c41-0c9f4b8f2d10", generation=1, creation_timestamp=T0,
        ),
        spec=api.NicoTaskSpec(
            site_id="660e8400-e29b-41d4-a716-446655440000", rack_ref="rack-1",
            operation=api.Operation.POWER_ON, **spec,
        ),
    )


def running_report() -> api.TaskReportV1:
    S, R = api.TaskReportV1Stage, api.TaskReportV1Step
    return api.TaskReportV1(stages=[
        S(number=1, status="completed", started_at=at(1), finished_at=at(5), steps=[
            R(component_type="PowerShelf", status="completed", total_components=2,
              started_at=at(1), finished_at=at(5)),
        ]),
        S(number=2, status="running", started_at=at(5), steps=[
            R(component_type="NVSwitch", status="running", total_components=2, started_at=at(5)),
        ]),
        S(number=3, status="pending", steps=[
            R(component_type="Compute", status="pending", total_components=6),
        ]),
    ])


def wire(task: api.NicoTask, status: api.NicoTaskStatus) -> dict[str, Any]:
    task.status = status
    return task.model_dump(mode="json", by_alias=True, exclude_none=True)


def test_report_of_a_running_task() -> None:
    task = make_task()
    status = state.with_status(task, api.TaskStatus.RUNNING, "Running", now=at(1),
                               report=running_report())
    status.rule_id = "770e8400-e29b-41d4-a716-446655440001"
    text = render_report(wire(task, status), now=at(9))
    lines = text.splitlines()
    assert lines[0] == ("Task:       default/power-on-rack-1  "
                        "(id 3f2a3c1e-8d2b-4a55-9c41-0c9f4b8f2d10)")
    assert "Status:     Running" in lines
    assert "Rule:       770e8400-e29b-41d4-a716-446655440001" in lines
    assert "Started:    2025-06-01T10:00:01Z" in lines
    assert "Finished:   -" in lines
    assert "Duration:   8s+" in lines
    table = lines[lines.index("") + 1:]
    assert table[0].split() == ["STAGE", "COMPONENT", "STATUS", "TOTAL", "STARTED", "FINISHED",
                                "DURATION", "ERROR"]
    assert table[1].split() == ["1", "(1", "step)", "completed", "2", "10:00:01", "10:00:05", "4s"]
    assert table[2].split() == ["PowerShelf", "completed", "2", "10:00:01", "10:00:05", "4s"]
    assert table[3].split() == ["2", "(1", "step)", "running", "2", "10:00:05", "-", "4s+"]
    assert table[4].split() == ["NVSwitch", "running", "2", "10:00:05", "-", "4s+"]
    assert table[6].split() == ["Compute", "pending", "6", "-", "-", "-"]
    # Columns line up: every row's STATUS starts where the header's does.
    col = table[0].index("STATUS")
    assert all(row[col - 1] == " " and row[col] != " " for row in table[1:])


def test_report_of_a_terminated_task_with_errors() -> None:
    task = make_task(cancel=True)
    closed = state.close_report(running_report(), state.CANCELLED_BY_USER, at(7))
    status = state.with_status(task, api.TaskStatus.TERMINATED, "Cancelled by user (alice)",
                               now=at(7), report=closed)
    status.started = at(1)
    status.cancel_requested_at = at(6)
    status.cancel_requested_by = "alice"
    text = render_report(wire(task, status), now=at(100))
    assert "Status:     Terminated" in text
    assert "Message:    Cancelled by user (alice)" in text
    assert "Finished:   2025-06-01T10:00:07Z" in text
    assert "Duration:   6s\n" in text
    assert "Cancel:     Terminate, requested at 2025-06-01T10:00:06Z by alice" in text
    nvswitch = next(line for line in text.splitlines() if "NVSwitch" in line)
    assert nvswitch.split()[:6] == ["NVSwitch", "failed", "2", "10:00:05", "10:00:07", "2s"]
    assert nvswitch.rstrip().endswith("Cancelled by user")
    assert "+" not in text.split("ERROR", 1)[1]  # nothing still running


def test_report_without_status_or_report() -> None:
    task = make_task()
    text = render_report(task.model_dump(mode="json", by_alias=True, exclude_none=True) | {
        "status": {}})
    assert "Status:     (no status yet)" in text
    assert text.rstrip().endswith("No report yet.")


def test_report_cancel_pending_condition() -> None:
    task = make_task(cancel=True)
    status = state.with_status(task, api.TaskStatus.RUNNING, "Running", now=at(1))
    status.conditions = state.set_condition(
        status.conditions, state.CANCEL_PENDING, True, "TemporalUnavailable",
        "terminate not confirmed yet: Temporal unreachable", 1, at(2))
    text = render_report(wire(task, status), now=at(3))
    assert "CancelPending: terminate not confirmed yet: Temporal unreachable" in text
    assert "Cancel:     Terminate, requested" in text


@pytest.mark.parametrize(("seconds", "text"), [
    (0, "0s"), (4.4, "4s"), (125, "2m05s"), (3723, "1h02m03s"), (2 * 86400 + 3 * 3600, "2d3h"),
])
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_normalize_for() -> None:
    assert normalize_for("finished") == "finished"
    assert normalize_for("terminated") == "Terminated"
    assert normalize_for("status=Succeeded") == "Succeeded"
    with pytest.raises(PluginError):
        normalize_for("Deleted")
    with pytest.raises(PluginError):
        normalize_for("condition=Ready")


def test_parse_timeout() -> None:
    assert parse_timeout("60s") == 60
    assert parse_timeout("5m") == 300
    assert parse_timeout("1h30m") == 5400
    assert parse_timeout("90") == 90
    assert parse_timeout("500ms") == 0.5
    with pytest.raises(PluginError):
        parse_timeout("soon")


@pytest.mark.parametrize(("current", "wanted", "verdict"), [
    (None, "finished", None), ("Running", "finished", None), ("Failed", "finished", True),
    ("Running", "Running", True), ("Pending", "Terminated", None),
    ("Terminated", "Terminated", True), ("Succeeded", "Terminated", False),
])
def test_wait_verdict(current: str | None, wanted: str, verdict: bool | None) -> None:
    task = {"status": {"status": current}} if current else {}
    assert wait_verdict(task, wanted) is verdict


@pytest.fixture
def invocations(monkeypatch: pytest.MonkeyPatch) -> list[kubectl_plugin.Invocation]:
    """Parse only: record what would run instead of calling the API server."""
    seen: list[kubectl_plugin.Invocation] = []

    def record(inv: kubectl_plugin.Invocation) -> int:
        seen.append(inv)
        return 0

    monkeypatch.setattr(kubectl_plugin, "execute", record)
    return seen


def test_flags_before_or_after_the_subcommand(
    invocations: list[kubectl_plugin.Invocation],
) -> None:
    main = kubectl_plugin.main
    assert main(["-n", "ns1", "report", "t"]) == 0
    assert main(["wait", "t", "--namespace", "ns2", "--for=Terminated", "--timeout=5s"]) == 0
    assert main(["cancel", "t"]) == 0
    assert main(["-n", "before", "--context", "c1", "cancel", "t", "-n", "after"]) == 0
    first, second, third, fourth = invocations
    assert (first.command, first.task, first.namespace) == ("report", "t", "ns1")
    assert first.output == "table"
    assert (second.namespace, second.for_, second.timeout) == ("ns2", "Terminated", "5s")
    assert third.command == "cancel" and third.namespace is None
    assert (fourth.namespace, fourth.context) == ("after", "c1")


@pytest.mark.parametrize(
    "argv", [[], ["bogus", "t"], ["report"], ["report", "t", "-o", "yaml"], ["cancel", "t", "--x"]]
)
def test_usage_errors_exit_two(
    argv: list[str],
    invocations: list[kubectl_plugin.Invocation],
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert kubectl_plugin.main(argv) == 2
    assert "Usage: kubectl nico" in capsys.readouterr().err
    assert invocations == []


def test_help_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    assert kubectl_plugin.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(c in out for c in ("cancel", "report", "wait"))
