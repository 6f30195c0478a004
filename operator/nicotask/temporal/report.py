"""Building and moving the v1 report (TaskReportV1). Pure: the workflow calls these.

Every function returns a new report and leaves its argument alone. Steps are
addressed by (stage number, index within the stage), index as in
`NicoOperationRuleSpec.stages()`. Semantics (docs/upstream.md, "Operation rules"):
- a step whose component type has no targets is `skipped` from the start,
  without timestamps; a stage whose steps are all skipped is skipped too;
- startedAt is set when a step or stage leaves pending, finishedAt when it
  becomes terminal (completed or failed);
- fail-fast: the first failing step fails its stage; every other running
  step of the stage becomes failed with the same error; later stages stay
  pending; report.error keeps the first failure, cut to 512 bytes.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

from nicotask.api import (
    ComponentType,
    NicoOperationRuleSpec,
    ReportStatus,
    TaskReportV1,
    TaskReportV1Stage,
    TaskReportV1Step,
    first_line_error,
)

TERMINAL = (ReportStatus.COMPLETED, ReportStatus.FAILED, ReportStatus.SKIPPED)


def initial_report(
    rule: NicoOperationRuleSpec, counts: Mapping[ComponentType, int]
) -> TaskReportV1:
    """Every stage and step pending, except the steps with no targets (skipped)."""
    stages: list[TaskReportV1Stage] = []
    for number, steps in rule.stages().items():
        report_steps = []
        for step in steps:
            total = int(counts.get(step.component_type, 0))
            report_steps.append(
                TaskReportV1Step(
                    component_type=step.component_type.value,
                    status=ReportStatus.PENDING if total > 0 else ReportStatus.SKIPPED,
                    total_components=total,
                )
            )
        all_skipped = all(s.status == ReportStatus.SKIPPED for s in report_steps)
        stages.append(
            TaskReportV1Stage(
                number=number,
                status=ReportStatus.SKIPPED if all_skipped else ReportStatus.PENDING,
                steps=report_steps,
            )
        )
    return TaskReportV1(stages=stages)


def add_stage(
    report: TaskReportV1,
    number: int,
    steps: list[ComponentType],
    counts: Mapping[ComponentType, int],
) -> TaskReportV1:
    """Append a stage (a cleanup stage) planned like initial_report plans the rule's."""
    out = report.model_copy(deep=True)
    report_steps = [
        TaskReportV1Step(
            component_type=ctype.value,
            status=ReportStatus.PENDING if counts.get(ctype, 0) > 0 else ReportStatus.SKIPPED,
            total_components=int(counts.get(ctype, 0)),
        )
        for ctype in steps
    ]
    all_skipped = all(s.status == ReportStatus.SKIPPED for s in report_steps)
    out.stages.append(
        TaskReportV1Stage(
            number=number,
            status=ReportStatus.SKIPPED if all_skipped else ReportStatus.PENDING,
            steps=report_steps,
        )
    )
    return out


def skip_pending(report: TaskReportV1) -> TaskReportV1:
    """A stopped task: every stage (and step) still pending is skipped, never to run."""
    out = report.model_copy(deep=True)
    for stage in out.stages:
        if stage.status != ReportStatus.PENDING:
            continue
        stage.status = ReportStatus.SKIPPED
        for step in stage.steps:
            if step.status == ReportStatus.PENDING:
                step.status = ReportStatus.SKIPPED
    return out


def _stage(report: TaskReportV1, number: int) -> TaskReportV1Stage:
    for stage in report.stages:
        if stage.number == number:
            return stage
    raise KeyError(f"report has no stage {number}")


def runnable_steps(report: TaskReportV1, number: int) -> list[int]:
    """Indices of the steps of a stage that have work to do (not skipped)."""
    return [
        i for i, s in enumerate(_stage(report, number).steps) if s.status != ReportStatus.SKIPPED
    ]


def start_stage(report: TaskReportV1, number: int, now: dt.datetime) -> TaskReportV1:
    """The stage and its pending steps start together (steps of a stage run in parallel)."""
    out = report.model_copy(deep=True)
    stage = _stage(out, number)
    if stage.status != ReportStatus.PENDING:
        return out
    stage.status = ReportStatus.RUNNING
    stage.started_at = now
    for step in stage.steps:
        if step.status == ReportStatus.PENDING:
            step.status = ReportStatus.RUNNING
            step.started_at = now
    return out


def complete_step(report: TaskReportV1, number: int, index: int, now: dt.datetime) -> TaskReportV1:
    """A running step completed. A step already terminal (failed by fail-fast) stays."""
    out = report.model_copy(deep=True)
    step = _stage(out, number).steps[index]
    if step.status in (ReportStatus.RUNNING, ReportStatus.PENDING):
        step.status = ReportStatus.COMPLETED
        step.started_at = step.started_at or now
        step.finished_at = now
    return out


def complete_stage(report: TaskReportV1, number: int, now: dt.datetime) -> TaskReportV1:
    """The stage completed: every step is completed or skipped."""
    out = report.model_copy(deep=True)
    stage = _stage(out, number)
    if stage.status in (ReportStatus.RUNNING, ReportStatus.PENDING):
        unfinished = [s for s in stage.steps if s.status not in TERMINAL]
        if unfinished:
            raise ValueError(f"stage {number} still has unfinished steps")
        stage.status = ReportStatus.COMPLETED
        stage.started_at = stage.started_at or now
        stage.finished_at = now
    return out


def fail_step(
    report: TaskReportV1, number: int, index: int, error: str, now: dt.datetime
) -> TaskReportV1:
    """Fail-fast: the step fails, and with it its stage and every running sibling.

    The first failure wins: if the stage already failed, the report is
    returned unchanged (the step was already marked failed with that error).
    """
    out = report.model_copy(deep=True)
    stage = _stage(out, number)
    if stage.status == ReportStatus.FAILED:
        return out
    message = first_line_error(error)
    step = stage.steps[index]
    step.status = ReportStatus.FAILED
    step.error = message
    step.started_at = step.started_at or now
    step.finished_at = now
    return _fail_stage(out, stage, message, now)


def fail_stage(report: TaskReportV1, number: int, error: str, now: dt.datetime) -> TaskReportV1:
    """The stage fails as a whole (e.g. the task timed out while it ran)."""
    out = report.model_copy(deep=True)
    stage = _stage(out, number)
    if stage.status == ReportStatus.FAILED:
        return out
    return _fail_stage(out, stage, first_line_error(error), now)


def _fail_stage(
    out: TaskReportV1, stage: TaskReportV1Stage, message: str, now: dt.datetime
) -> TaskReportV1:
    for sibling in stage.steps:
        if sibling.status == ReportStatus.RUNNING:
            sibling.status = ReportStatus.FAILED
            sibling.error = message
            sibling.finished_at = now
    stage.status = ReportStatus.FAILED
    stage.error = message
    stage.started_at = stage.started_at or now
    stage.finished_at = now
    if out.error is None:
        out.error = message
    return out
