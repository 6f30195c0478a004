"""The v1 report transitions used by the workflow (pure)."""

from __future__ import annotations

import datetime as dt

import pytest

from nicotask.api import (
    ActionType,
    CleanupStep,
    ComponentType,
    NicoOperationRuleSpec,
    Operation,
    ReportStatus,
    RuleStep,
    StepAction,
    TaskReportV1,
    report_matches_rule,
)
from nicotask.temporal import report as rep

T = [dt.datetime(2026, 1, 1, 0, 0, i, tzinfo=dt.UTC) for i in range(30)]
PS, NV, CO = ComponentType.POWER_SHELF, ComponentType.NVSWITCH, ComponentType.COMPUTE
P, R, C, F, S = (
    ReportStatus.PENDING,
    ReportStatus.RUNNING,
    ReportStatus.COMPLETED,
    ReportStatus.FAILED,
    ReportStatus.SKIPPED,
)


def rule(*steps: tuple[int, ComponentType]) -> NicoOperationRuleSpec:
    return NicoOperationRuleSpec(
        rule_id="11111111-2222-3333-4444-555555555555",
        operation=Operation.POWER_ON,
        steps=[
            RuleStep(
                component_type=ctype,
                stage=stage,
                action=StepAction(type=ActionType.SLEEP, duration_seconds=1),
            )
            for stage, ctype in steps
        ],
    )


# Stage 1: PowerShelf + NVSwitch in parallel; stage 2: Compute; stage 3: NVSwitch.
RULE = rule((1, PS), (1, NV), (2, CO), (3, NV))
COUNTS = {PS: 2, NV: 2, CO: 6}


def statuses(report: TaskReportV1) -> list[tuple[ReportStatus, list[ReportStatus]]]:
    return [(s.status, [st.status for st in s.steps]) for s in report.stages]


def test_initial_report_mirrors_the_rule() -> None:
    report = rep.initial_report(RULE, COUNTS)
    assert report.version == "1"
    assert [s.number for s in report.stages] == [1, 2, 3]
    assert statuses(report) == [(P, [P, P]), (P, [P]), (P, [P])]
    assert [st.component_type for s in report.stages for st in s.steps] == [
        "PowerShelf", "NVSwitch", "Compute", "NVSwitch",
    ]  # fmt: skip
    assert [st.total_components for s in report.stages for st in s.steps] == [2, 2, 6, 2]
    for s in report.stages:
        assert s.started_at is None and s.finished_at is None and s.error is None
        for st in s.steps:
            assert st.completed_components is None and st.failed_components is None
    assert report.error is None
    assert report_matches_rule(report, RULE) == []
    wire = report.wire()
    assert "completedComponents" not in wire["stages"][0]["steps"][0]
    assert wire["stages"][0]["steps"][0]["totalComponents"] == 2


def test_rule_steps_out_of_order_are_grouped_by_stage() -> None:
    spec = rule((2, CO), (1, PS), (1, NV))
    report = rep.initial_report(spec, COUNTS)
    assert [s.number for s in report.stages] == [1, 2]
    assert [st.component_type for st in report.stages[0].steps] == ["PowerShelf", "NVSwitch"]


def test_steps_without_targets_are_skipped_from_the_start() -> None:
    report = rep.initial_report(RULE, {CO: 3})
    # stage 1 has no targets at all: skipped with its steps; stage 3 likewise.
    assert statuses(report) == [(S, [S, S]), (P, [P]), (S, [S])]
    assert report.stages[0].steps[0].total_components == 0
    assert rep.runnable_steps(report, 1) == []
    assert rep.runnable_steps(report, 2) == [0]
    partial = rep.initial_report(RULE, {PS: 1, CO: 1})
    assert statuses(partial)[0] == (P, [P, S])
    assert rep.runnable_steps(partial, 1) == [0]
    started = rep.start_stage(partial, 1, T[1])
    assert statuses(started)[0] == (R, [R, S])
    skipped = started.stages[0].steps[1]
    assert skipped.started_at is None and skipped.finished_at is None


def test_happy_path_timestamps() -> None:
    r0 = rep.initial_report(RULE, COUNTS)
    r1 = rep.start_stage(r0, 1, T[1])
    assert r0.stages[0].status == P, "functions must not mutate their argument"
    assert statuses(r1)[0] == (R, [R, R])
    assert r1.stages[0].started_at == T[1]
    assert all(st.started_at == T[1] for st in r1.stages[0].steps)
    r2 = rep.complete_step(r1, 1, 1, T[2])
    assert statuses(r2)[0] == (R, [R, C])
    assert r2.stages[0].steps[1].finished_at == T[2]
    assert r2.stages[0].finished_at is None
    with pytest.raises(ValueError, match="unfinished"):
        rep.complete_stage(r2, 1, T[3])
    r3 = rep.complete_step(r2, 1, 0, T[3])
    r4 = rep.complete_stage(r3, 1, T[3])
    assert statuses(r4)[0] == (C, [C, C])
    assert r4.stages[0].finished_at == T[3]
    assert statuses(r4)[1:] == [(P, [P]), (P, [P])]
    r = r4
    for number, t in ((2, 4), (3, 6)):
        r = rep.start_stage(r, number, T[t])
        r = rep.complete_step(r, number, 0, T[t + 1])
        r = rep.complete_stage(r, number, T[t + 1])
    assert statuses(r) == [(C, [C, C]), (C, [C]), (C, [C])]
    assert r.error is None


def test_fail_fast() -> None:
    r = rep.start_stage(rep.initial_report(RULE, COUNTS), 1, T[1])
    r = rep.fail_step(r, 1, 1, "NVSwitch nv-0: BMC unreachable", T[2])
    first, *later = r.stages
    assert first.status == F and first.error == "NVSwitch nv-0: BMC unreachable"
    assert first.finished_at == T[2]
    # The running sibling fails with the same error.
    assert [st.status for st in first.steps] == [F, F]
    assert all(st.error == "NVSwitch nv-0: BMC unreachable" for st in first.steps)
    assert all(st.finished_at == T[2] for st in first.steps)
    assert all(st.started_at == T[1] for st in first.steps)
    # Later stages stay pending, untouched.
    assert [s.status for s in later] == [P, P]
    assert all(s.started_at is None for s in later)
    assert r.error == "NVSwitch nv-0: BMC unreachable"


def test_fail_fast_keeps_completed_siblings_and_first_error() -> None:
    spec = rule((1, PS), (1, NV), (1, CO))
    r = rep.start_stage(rep.initial_report(spec, COUNTS), 1, T[1])
    r = rep.complete_step(r, 1, 0, T[2])
    r = rep.fail_step(r, 1, 2, "first", T[3])
    assert [st.status for st in r.stages[0].steps] == [C, F, F]
    assert r.stages[0].steps[0].error is None
    assert r.stages[0].steps[0].finished_at == T[2]
    # A second failure (or a late completion) changes nothing.
    again = rep.fail_step(r, 1, 1, "second", T[4])
    assert again == r
    late = rep.complete_step(r, 1, 1, T[5])
    assert late.stages[0].steps[1].status == F
    assert late.error == "first"


def test_report_error_keeps_the_first_failure_across_stages() -> None:
    r = rep.initial_report(RULE, COUNTS)
    r = rep.start_stage(r, 1, T[1])
    r = rep.fail_step(r, 1, 0, "first", T[2])
    r = rep.start_stage(r, 2, T[3])  # not what the workflow does, but error stays first
    r = rep.fail_step(r, 2, 0, "second", T[4])
    assert r.error == "first"
    assert r.stages[1].error == "second"


def test_errors_are_first_line_and_512_bytes() -> None:
    r = rep.start_stage(rep.initial_report(RULE, COUNTS), 1, T[1])
    long = "ü" * 400 + "\ntraceback..."
    r = rep.fail_step(r, 1, 0, long, T[2])
    for text in (
        r.error,
        r.stages[0].error,
        r.stages[0].steps[0].error,
        r.stages[0].steps[1].error,
    ):
        assert text is not None
        assert len(text.encode()) <= 512
        assert "traceback" not in text
        assert text == "ü" * 256


def test_fail_stage_for_a_deadline() -> None:
    r = rep.start_stage(rep.initial_report(RULE, COUNTS), 1, T[1])
    r = rep.complete_step(r, 1, 0, T[2])
    r = rep.fail_stage(r, 1, "task timed out after 60s", T[3])
    assert statuses(r)[0] == (F, [C, F])
    assert r.stages[0].steps[1].error == "task timed out after 60s"
    assert r.error == "task timed out after 60s"
    assert rep.fail_stage(r, 1, "other", T[4]) == r


def test_unknown_stage() -> None:
    with pytest.raises(KeyError):
        rep.start_stage(rep.initial_report(RULE, COUNTS), 9, T[0])


def test_a_stop_skips_every_pending_stage_and_step_and_leaves_the_rest() -> None:
    report = rep.initial_report(RULE, {PS: 2, NV: 2})  # no Compute: stage 2 skipped
    report = rep.start_stage(report, 1, T[1])
    report = rep.complete_step(report, 1, 0, T[2])
    report = rep.complete_step(report, 1, 1, T[2])
    report = rep.complete_stage(report, 1, T[2])
    stopped = rep.skip_pending(report)
    assert statuses(stopped) == [(C, [C, C]), (S, [S]), (S, [S])]
    assert stopped.stages[2].started_at is None and stopped.stages[2].finished_at is None
    assert statuses(report)[2] == (P, [P])  # the argument is left alone


def test_a_cleanup_stage_is_planned_after_the_rule_and_mirrors_the_cleanup() -> None:
    spec = RULE.model_copy(
        update={
            "cleanup": [
                CleanupStep(
                    component_type=CO,
                    stage=1,
                    action=StepAction(type=ActionType.SLEEP, duration_seconds=1),
                )
            ]
        }
    )
    report = rep.initial_report(spec, COUNTS)
    assert [s.number for s in report.stages] == [1, 2, 3]  # the plan has no cleanup
    with_cleanup = rep.add_stage(report, 101, [CO], {CO: 4})
    assert [s.number for s in with_cleanup.stages] == [1, 2, 3, 101]
    assert statuses(with_cleanup)[3] == (P, [P])
    assert with_cleanup.stages[3].steps[0].total_components == 4
    assert report_matches_rule(with_cleanup, spec) == []
    nothing = rep.add_stage(report, 101, [CO], {})
    assert statuses(nothing)[3] == (S, [S])
    # A report stage 101 of a rule without cleanup is not the rule's.
    assert report_matches_rule(with_cleanup, RULE) == ["stage 101: the rule has no such stage"]
    assert list(spec.cleanup_stages()) == [101]
