"""kubectl nico: the report table, --for and --timeout parsing, wait verdicts, flag parsing."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from nicotask import api, lifecycle
from nicotask.kubectl_nico import cli as kubectl_plugin
from nicotask.kubectl_nico.common import PluginError, normalize_for, parse_timeout, wait_verdict
from nicotask.kubectl_nico.report import format_duration, render_report

T0 = dt.datetime(2025, 6, 1, 10, 0, 0, tzinfo=dt.UTC)


def at(seconds: int) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def make_task(**spec: Any) -> api.NicoTask:
    return api.NicoTask(
        metadata=api.ObjectMeta(
            name="power-on-rack-1",
            namespace="default",
            uid="3f2a3c1e-8d2b-4a55-9c41-0c9f4b8f2d10",
            generation=1,
            creation_timestamp=T0,
        ),
        spec=api.NicoTaskSpec(
            site_id="660e8400-e29b-41d4-a716-446655440000",
            rack_ref="rack-1",
            operation=api.Operation.POWER_ON,
            **spec,
        ),
    )


def running_report() -> api.TaskReportV1:
    S, R = api.TaskReportV1Stage, api.TaskReportV1Step
    return api.TaskReportV1(
        stages=[
            S(
                number=1,
                status="completed",
                started_at=at(1),
                finished_at=at(5),
                steps=[
                    R(
                        component_type="PowerShelf",
                        status="completed",
                        total_components=2,
                        started_at=at(1),
                        finished_at=at(5),
                    ),
                ],
            ),
            S(
                number=2,
                status="running",
                started_at=at(5),
                steps=[
                    R(
                        component_type="NVSwitch",
                        status="running",
                        total_components=2,
                        started_at=at(5),
                    ),
                ],
            ),
            S(
                number=3,
                status="pending",
                steps=[
                    R(component_type="Compute", status="pending", total_components=6),
                ],
            ),
        ]
    )


def wire(task: api.NicoTask, status: api.NicoTaskStatus) -> dict[str, Any]:
    task.status = status
    return task.model_dump(mode="json", by_alias=True, exclude_none=True)


def test_report_of_a_running_task() -> None:
    task = make_task()
    status = lifecycle.with_status(
        task, api.TaskStatus.RUNNING, "Running", now=at(1), report=running_report()
    )
    status.rule_id = "770e8400-e29b-41d4-a716-446655440001"
    text = render_report(wire(task, status), now=at(9))
    lines = text.splitlines()
    assert lines[0] == (
        "Task:       default/power-on-rack-1  (id 3f2a3c1e-8d2b-4a55-9c41-0c9f4b8f2d10)"
    )
    assert "Status:     Running" in lines
    assert "Rule:       770e8400-e29b-41d4-a716-446655440001" in lines
    assert "Started:    2025-06-01T10:00:01Z" in lines
    assert "Finished:   -" in lines
    assert "Duration:   8s+" in lines
    table = lines[lines.index("") + 1 :]
    assert table[0].split() == [
        "STAGE",
        "COMPONENT",
        "STATUS",
        "TOTAL",
        "STARTED",
        "FINISHED",
        "DURATION",
        "ERROR",
    ]
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
    closed = lifecycle.close_report(running_report(), lifecycle.CANCELLED_BY_USER, at(7))
    status = lifecycle.with_status(
        task, api.TaskStatus.TERMINATED, "Cancelled by user (alice)", now=at(7), report=closed
    )
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
    text = render_report(
        task.model_dump(mode="json", by_alias=True, exclude_none=True) | {"status": {}}
    )
    assert "Status:     (no status yet)" in text
    assert text.rstrip().endswith("No report yet.")


def test_report_cancel_pending_condition() -> None:
    task = make_task(cancel=True)
    status = lifecycle.with_status(task, api.TaskStatus.RUNNING, "Running", now=at(1))
    status.conditions = lifecycle.set_condition(
        status.conditions,
        lifecycle.CANCEL_PENDING,
        True,
        "TemporalUnavailable",
        "terminate not confirmed yet: Temporal unreachable",
        1,
        at(2),
    )
    text = render_report(wire(task, status), now=at(3))
    assert "CancelPending: terminate not confirmed yet: Temporal unreachable" in text
    assert "Cancel:     Terminate, requested" in text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (4.4, "4s"),
        (125, "2m05s"),
        (3723, "1h02m03s"),
        (2 * 86400 + 3 * 3600, "2d3h"),
    ],
)
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


@pytest.mark.parametrize(
    ("current", "wanted", "verdict"),
    [
        (None, "finished", None),
        ("Running", "finished", None),
        ("Failed", "finished", True),
        ("Running", "Running", True),
        ("Pending", "Terminated", None),
        ("Terminated", "Terminated", True),
        ("Succeeded", "Terminated", False),
    ],
)
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


# ---- cancel of one task or many (pure parts) ---------------------------------------------

from nicotask.kubectl_nico import bulk, rerun  # noqa: E402
from nicotask.kubectl_nico.bulk import Outcome  # noqa: E402


def wire_task(name: str = "t", status: str | None = "Running", rv: str = "7", **spec: Any) -> dict:
    task: dict[str, Any] = {
        "metadata": {"name": name, "namespace": "ns", "uid": f"uid-{name}", "resourceVersion": rv},
        "spec": {
            "siteId": "660e8400-e29b-41d4-a716-446655440000",
            "rackRef": "rack-1",
            "operation": "PowerOn",
            **spec,
        },
    }
    if status:
        task["status"] = {"status": status}
    return task


def test_selection_combinations() -> None:
    sel = bulk.selection(["a", "b"], None, None, False, False)
    assert sel.by_name and sel.names == ("a", "b") and sel.field_selector is None
    sel = bulk.selection([], "team=x", "rack-2", False, True)
    assert (sel.selector, sel.field_selector, sel.all_namespaces) == (
        "team=x",
        "spec.rackRef=rack-2",
        True,
    )
    assert bulk.selection([], None, None, True, False).all
    for bad, words in [
        ((["a"], "x=y", None, False, False), "not both"),
        ((["a"], None, None, True, False), "not both"),
        ((["a"], None, None, False, True), "-A"),
        (([], "x=y", None, True, False), "--all selects every task"),
        (([], None, None, False, False), "which tasks?"),
        (([], None, None, False, True), "which tasks?"),
        (([], " ", None, False, False), "empty selector"),
    ]:
        with pytest.raises(PluginError, match=words):
            bulk.selection(*bad)


@pytest.mark.parametrize(
    "reason",
    [
        "",
        "two\nlines",
        "tab\there",
        "bell\x07",
        "del\x7f",
        "c1\x85",
        "bad \ufffd",
        "surrogate \udcff",
        "x" * 513,
    ],
)
def test_reason_refused_before_sending(reason: str) -> None:
    with pytest.raises(PluginError, match="--reason"):
        bulk.validate_reason(reason)


def test_reason_accepted() -> None:
    assert bulk.validate_reason(None) is None
    assert bulk.validate_reason("x" * 512) == "x" * 512
    assert bulk.validate_reason("maintenance window — rack 7 (ticket #42)")


def test_plan_new_cancel() -> None:
    p = bulk.plan(wire_task(), "Graceful", "why", "alice")
    assert p.outcome == Outcome.CANCELLED
    assert p.patch == {
        "metadata": {
            "resourceVersion": "7",
            "annotations": {"nico.dev/cancel-requested-by": "alice"},
        },
        "spec": {"cancel": True, "cancelMode": "Graceful", "cancelReason": "why"},
    }
    p = bulk.plan(wire_task(status=None), "Terminate", None, None)
    assert p.patch == {
        "metadata": {"resourceVersion": "7"},
        "spec": {"cancel": True, "cancelMode": "Terminate"},
    }


@pytest.mark.parametrize(
    ("status", "spec", "mode", "outcome"),
    [
        ("Succeeded", {}, "Terminate", Outcome.ALREADY_FINISHED),
        ("Failed", {"cancel": True}, "Terminate", Outcome.ALREADY_FINISHED),
        ("Terminated", {"cancel": True}, "Terminate", Outcome.ALREADY_CANCELLED),
        ("Running", {"cancel": True}, "Terminate", Outcome.ALREADY_CANCELLED),
        ("Running", {"cancel": True}, "Graceful", Outcome.ALREADY_CANCELLED),
        (
            "Running",
            {"cancel": True, "cancelMode": "Terminate"},
            "Graceful",
            Outcome.ALREADY_CANCELLED,
        ),
        (
            "Running",
            {"cancel": True, "cancelMode": "Graceful"},
            "Graceful",
            Outcome.ALREADY_CANCELLED,
        ),
    ],
)
def test_plan_nothing_to_send(status: str, spec: dict, mode: str, outcome: Outcome) -> None:
    p = bulk.plan(wire_task(status=status, **spec), mode, "r", "alice")
    assert (p.outcome, p.patch) == (outcome, None)


def test_plan_escalates_a_graceful_stop_keeping_its_reason() -> None:
    task = wire_task(cancel=True, cancelMode="Graceful", cancelReason="first")
    p = bulk.plan(task, "Terminate", "second", "bob")
    assert p.outcome == Outcome.ESCALATED
    assert p.patch is not None and p.patch["spec"] == {"cancelMode": "Terminate"}
    assert p.patch["metadata"]["resourceVersion"] == "7"
    assert "reason is kept" in p.note
    # A graceful stop without a reason gets the escalation's.
    p = bulk.plan(wire_task(cancel=True, cancelMode="Graceful"), "Terminate", "now", None)
    assert p.patch is not None
    assert p.patch["spec"] == {"cancelMode": "Terminate", "cancelReason": "now"}


@pytest.mark.parametrize(
    ("status", "message", "outcome"),
    [
        (
            403,
            'nicotasks.nico.dev "t" is forbidden: User "u" cannot patch resource',
            Outcome.REFUSED_RBAC,
        ),
        (
            403,
            "ValidatingAdmissionPolicy 'p' with binding 'p' denied request: no",
            Outcome.REFUSED_ADMISSION,
        ),
        (422, "spec.cancelReason: Invalid value", Outcome.REFUSED_ADMISSION),
        (404, "not found", Outcome.NOT_FOUND),
        (500, "boom", Outcome.FAILED),
        (None, "connection reset", Outcome.FAILED),
    ],
)
def test_refusal_outcome(status: int | None, message: str, outcome: Outcome) -> None:
    assert bulk.refusal_outcome(status, message) == outcome


def test_summary_text_and_exit_code() -> None:
    s = bulk.Summary()
    for o in [Outcome.CANCELLED] * 3 + [Outcome.ESCALATED, Outcome.ALREADY_FINISHED]:
        s.add(o)
    assert s.text() == (
        "5 tasks: 4 cancelled (1 escalated to Terminate), 0 already cancelled, 1 already finished"
    )
    assert s.exit_code() == 0
    s.add(Outcome.REFUSED_RBAC)
    s.add(Outcome.REFUSED_ADMISSION)
    s.add(Outcome.NOT_FOUND)
    assert s.text().endswith("1 refused by RBAC, 1 refused by admission, 1 not found")
    assert s.exit_code() == 1
    d = bulk.Summary()
    d.add(Outcome.CANCELLED)
    assert d.text(dry_run=True) == (
        "1 task: 1 would be cancelled, 0 already cancelled, "
        "0 already finished (dry run: nothing changed)"
    )


def test_result_lines() -> None:
    r = bulk.Result("ns", "t", Outcome.CANCELLED, "Graceful")
    assert r.line(False) == "nicotask.nico.dev/t cancel requested (Graceful)"
    assert r.line(True) == "ns/nicotask.nico.dev/t cancel requested (Graceful)"
    r = bulk.Result("ns", "t", Outcome.REFUSED_RBAC, "forbidden: no")
    assert r.line(False) == "error: nicotask.nico.dev/t refused by RBAC: forbidden: no"


def test_dry_run_table() -> None:
    tasks = [
        wire_task("a"),
        wire_task("bb", status="Succeeded", rackRef="rack-22"),
        wire_task("c", cancel=True, cancelMode="Graceful"),
    ]
    plans = [bulk.plan(t, "Terminate", None, None) for t in tasks]
    lines = bulk.dry_run_table(tasks, plans, with_namespace=True)
    assert lines[0].split() == ["NAMESPACE", "NAME", "STATUS", "RACK", "ACTION"]
    assert lines[1].split() == ["ns", "a", "Running", "rack-1", "cancel", "(Terminate)"]
    assert lines[2].split() == ["ns", "bb", "Succeeded", "rack-22", "none:", "already", "finished"]
    assert lines[3].split()[-3:] == ["escalate", "to", "Terminate"]
    assert lines[0].index("STATUS") == lines[2].index("Succeeded")


def test_confirmation() -> None:
    names = [f"t{i}" for i in range(7)]
    text = bulk.confirmation_prompt(names, 9, 'in namespace "ns"', "Graceful", "window")
    assert text.startswith(
        'Cancel 7 of the 9 selected tasks in namespace "ns" '
        '(mode Graceful, reason "window"): t0, t1, t2, t3, t4, ...'
    )
    assert text.endswith("Proceed? [y/N] ")
    assert bulk.confirmed("y\n") and bulk.confirmed(" YES ")
    assert not bulk.confirmed("") and not bulk.confirmed(None) and not bulk.confirmed("no")


def test_progress() -> None:
    p = bulk.Progress(250, tty=False)
    shown = [text for _ in range(250) if (text := p.step())]
    assert shown == ["cancelling 100/250\n", "cancelling 200/250\n", "cancelling 250/250\n"]
    t = bulk.Progress(3, tty=True)
    assert [t.step() for _ in range(3)] == [f"\rcancelling {i}/3" for i in (1, 2, 3)]


def test_cancel_flags(invocations: list[kubectl_plugin.Invocation]) -> None:
    main = kubectl_plugin.main
    assert (
        main(
            [
                "cancel",
                "-l",
                "team=x",
                "--rack",
                "r1",
                "-A",
                "--mode",
                "graceful",
                "--reason",
                "why",
                "--dry-run",
                "-y",
                "--concurrency",
                "8",
            ]
        )
        == 0
    )
    assert main(["cancel", "a", "b", "-n", "ns"]) == 0
    assert main(["cancel", "--all"]) == 0
    first, second, third = invocations
    assert (first.selector, first.rack, first.all_namespaces, first.mode, first.reason) == (
        "team=x",
        "r1",
        True,
        "Graceful",
        "why",
    )
    assert (first.dry_run, first.yes, first.concurrency) == (True, True, 8)
    assert (second.tasks, second.namespace, second.mode) == (("a", "b"), "ns", "Terminate")
    assert third.all and not third.yes


def test_cancel_usage_errors_before_any_request(capsys: pytest.CaptureFixture[str]) -> None:
    # No kubeconfig needed: the selection and the reason are checked first.
    assert kubectl_plugin.main(["--kubeconfig", "/nonexistent", "cancel"]) == 2
    assert "which tasks?" in capsys.readouterr().err
    assert (
        kubectl_plugin.main(["--kubeconfig", "/nonexistent", "cancel", "--all", "--reason", "a\nb"])
        == 2
    )
    assert "one line of printable text" in capsys.readouterr().err
    assert kubectl_plugin.main(["cancel", "--all", "--mode", "Soft"]) == 2


# ---- rerun (pure parts) -------------------------------------------------------------------


def test_rerun_names() -> None:
    assert rerun.rerun_name("power-on-rack-1", 1) == "power-on-rack-1-rerun-1"
    assert rerun.rerun_name("power-on-rack-1-rerun-1", 2) == "power-on-rack-1-rerun-2"
    assert rerun.rerun_base("x-rerun-3-rerun-12") == "x"
    assert rerun.rerun_base("rerun-1") == "rerun-1"
    long = "a" * 60 + "-b" * 20
    name = rerun.rerun_name(long, 10)
    assert len(name) == 63 and name.endswith("-rerun-10") and "--" not in name


def test_rerun_manifest() -> None:
    old = wire_task(
        "nightly",
        status="Terminated",
        cancel=True,
        cancelMode="Graceful",
        cancelReason="window",
        ruleId="770e8400-e29b-41d4-a716-446655440001",
        description="d",
        deadline={"activeSeconds": 600, "stop": "Terminate"},
        ttlSecondsAfterFinished=3600,
        suspend=True,
    )
    old["metadata"]["labels"] = {
        "team": "infra",
        "app.kubernetes.io/instance": "argo-app",
        "kustomize.toolkit.fluxcd.io/name": "k",
        "nico.dev/rerun-of": "older",
    }
    old["metadata"]["annotations"] = {
        "nico.dev/cancel-requested-by": "alice",
        "argocd.argoproj.io/tracking-id": "x",
    }
    m = rerun.rerun_manifest(old, "nightly-rerun-1")
    assert m["apiVersion"] == "nico.dev/v1alpha1" and m["kind"] == "NicoTask"
    assert m["metadata"] == {
        "name": "nightly-rerun-1",
        "labels": {"team": "infra", "nico.dev/rerun-of": "nightly"},
        "annotations": {"nico.dev/rerun-of": "nightly", "nico.dev/rerun-of-uid": "uid-nightly"},
    }
    assert m["spec"] == {
        "siteId": "660e8400-e29b-41d4-a716-446655440000",
        "rackRef": "rack-1",
        "operation": "PowerOn",
        "ruleId": "770e8400-e29b-41d4-a716-446655440001",
        "description": "d",
        "deadline": {"activeSeconds": 600, "stop": "Terminate"},
        "ttlSecondsAfterFinished": 3600,
    }
    # Unpinned stays unpinned: the rule is resolved again, as for the original.
    plain = rerun.rerun_manifest(wire_task("p", status="Failed"), "p-rerun-1")
    assert "ruleId" not in plain["spec"] and "description" not in plain["spec"]
    # A name too long for a label value: linked by the annotations only.
    long = rerun.rerun_manifest(wire_task("x" * 70, status="Failed"), "x-rerun-1")
    assert "labels" not in long["metadata"]
    assert long["metadata"]["annotations"]["nico.dev/rerun-of"] == "x" * 70


@pytest.mark.parametrize("status", [None, "Pending", "Waiting", "Running"])
def test_rerun_refuses_a_live_task(status: str | None) -> None:
    with pytest.raises(PluginError, match="only a finished task"):
        rerun.check_rerunnable(wire_task(status=status))


def test_rerun_refuses_a_passed_deadline() -> None:
    task = wire_task(status="Failed", deadline={"notAfter": "2025-06-01T10:00:00Z"})
    with pytest.raises(PluginError, match="has passed"):
        rerun.check_rerunnable(task, now=at(1))
    rerun.check_rerunnable(task, now=at(-1))
    rerun.check_rerunnable(wire_task(status="Succeeded"))


def test_reruns_of() -> None:
    task = wire_task("x", status="Failed")

    def other(name: str, created: str, uid: str | None) -> dict[str, Any]:
        ann = {"nico.dev/rerun-of-uid": uid} if uid else {}
        return {"metadata": {"name": name, "creationTimestamp": created, "annotations": ann}}

    found = [
        other("x-rerun-2", "2025-06-02T00:00:00Z", "uid-x"),
        other("x-rerun-1", "2025-06-01T00:00:00Z", None),  # written by hand (Git)
        other("old-x-rerun", "2025-05-01T00:00:00Z", "uid-of-an-older-x"),
    ]
    assert rerun.reruns_of(task, found) == ["x-rerun-1", "x-rerun-2"]


def test_report_shows_cancel_mode_reason_and_rerun_links() -> None:
    task = make_task(cancel=True, cancel_mode=api.StopMode.GRACEFUL, cancel_reason="window")
    task.metadata.annotations = {"nico.dev/rerun-of": "power-on-rack-0"}
    status = lifecycle.with_status(task, api.TaskStatus.RUNNING, "Stopping", now=at(1))
    status.cancel_requested_by = "alice"
    status.cancel_requested_at = at(2)
    status.cancel_mode = api.StopMode.GRACEFUL
    status.cancel_reason = "window"
    text = render_report(wire(task, status), now=at(3), reruns=["a-rerun-1", "a-rerun-2"])
    lines = text.splitlines()
    assert "Cancel:     Graceful, requested at 2025-06-01T10:00:02Z by alice" in lines
    assert "Reason:     window" in lines
    assert "Rerun of:   power-on-rack-0" in lines
    assert "Rerun as:   a-rerun-1, a-rerun-2" in lines


def test_report_shows_an_escalation_not_delivered_yet() -> None:
    task = make_task(cancel=True, cancel_mode=api.StopMode.TERMINATE)
    status = lifecycle.with_status(task, api.TaskStatus.RUNNING, "Stopping", now=at(1))
    status.cancel_mode = api.StopMode.GRACEFUL
    text = render_report(wire(task, status), now=at(3))
    assert "Cancel:     Graceful, escalated to Terminate, requested" in text
    status.cancel_mode = api.StopMode.TERMINATE
    assert "Cancel:     Terminate, requested" in render_report(wire(task, status), now=at(3))
