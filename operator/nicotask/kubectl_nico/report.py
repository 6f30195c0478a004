"""`kubectl nico report`: a readable report of one NicoTask (pure rendering)."""

from __future__ import annotations

import datetime as dt
from typing import Any


def _parse_time(value: Any) -> dt.datetime | None:
    if not value or not isinstance(value, str):
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def _clock(value: Any) -> str:
    parsed = _parse_time(value)
    return parsed.astimezone(dt.UTC).strftime("%H:%M:%S") if parsed else "-"


def _stamp(value: Any) -> str:
    parsed = _parse_time(value)
    return parsed.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if parsed else "-"


def format_duration(seconds: float) -> str:
    """4s, 2m05s, 1h02m03s, 2d3h."""
    total = max(0, round(seconds))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours}h"
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def _duration(started: Any, finished: Any, now: dt.datetime) -> str:
    start = _parse_time(started)
    if start is None:
        return "-"
    end = _parse_time(finished)
    if end is None:
        return format_duration((now - start).total_seconds()) + "+"  # still going
    return format_duration((end - start).total_seconds())


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    lines = []
    for row in [headers, *rows]:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row)]
        lines.append("  ".join(cells).rstrip())
    return lines


def _one_line(text: Any) -> str:
    return " ".join(str(text).split()) if text else ""


def render_report(
    task: dict[str, Any],
    now: dt.datetime | None = None,
    reruns: list[str] | None = None,
) -> str:
    """A readable report of one NicoTask (the object as the API server returns it).

    A header (task, status, message, rule, times, cancel, conditions worth knowing)
    and a table with one row per stage followed by one row per step of the stage:
    stage number, component type, status, total components, started, finished,
    duration, error. Times in the table are UTC clock times; a duration ending in
    `+` is still growing. `reruns` are the names of the tasks created as reruns of
    this one (found by their `nico.dev/rerun-of` label), shown as "Rerun as".
    """
    now = now or dt.datetime.now(dt.UTC)
    meta = task.get("metadata") or {}
    spec = task.get("spec") or {}
    status = task.get("status") or {}
    name = f"{meta.get('namespace', '')}/{meta.get('name', '')}".lstrip("/")
    state = status.get("status") or "(no status yet)"
    lines = [
        f"Task:       {name}  (id {status.get('id') or meta.get('uid') or '-'})",
        f"Operation:  {spec.get('operation', '-')} on rack {spec.get('rackRef', '-')}"
        f"  (site {spec.get('siteId', '-')})",
        f"Status:     {state}",
        f"Message:    {_one_line(status.get('message')) or '-'}",
        f"Rule:       {status.get('ruleId') or spec.get('ruleId') or '-'}",
        f"Created:    {_stamp(status.get('created') or meta.get('creationTimestamp'))}",
        f"Started:    {_stamp(status.get('started'))}",
        f"Finished:   {_stamp(status.get('finished'))}",
    ]
    if status.get("started"):
        lines.append(f"Duration:   {_duration(status.get('started'), status.get('finished'), now)}")
    if spec.get("cancel"):
        who = status.get("cancelRequestedBy")
        at = status.get("cancelRequestedAt")
        asked = spec.get("cancelMode") or "Terminate"
        mode = status.get("cancelMode") or asked
        if mode != asked:  # an escalation the operator has not delivered yet
            mode = f"{mode}, escalated to {asked}"
        detail = (f" at {_stamp(at)}" if at else "") + (f" by {who}" if who else "")
        lines.append(f"Cancel:     {mode}, requested{detail}")
        reason = status.get("cancelReason") or spec.get("cancelReason")
        if reason:
            lines.append(f"Reason:     {_one_line(reason)}")
    rerun_of = rerun_origin(meta)
    if rerun_of:
        lines.append(f"Rerun of:   {rerun_of}")
    if reruns:
        lines.append(f"Rerun as:   {', '.join(reruns)}")
    for cond in status.get("conditions") or []:
        if cond.get("type") in ("CancelPending", "CancelIgnored") and cond.get("status") == "True":
            label = cond["type"] + ":"
            lines.append(f"{label:<11} {_one_line(cond.get('message')) or '-'}")
    report = status.get("report") or {}
    if report.get("error"):
        lines.append(f"Error:      {_one_line(report['error'])}")
    stages = report.get("stages") or []
    lines.append("")
    if not stages:
        lines.append("No report yet.")
        return "\n".join(lines) + "\n"
    headers = ["STAGE", "COMPONENT", "STATUS", "TOTAL", "STARTED", "FINISHED", "DURATION", "ERROR"]
    rows: list[list[str]] = []
    for stage in stages:
        steps = stage.get("steps") or []
        totals = [s.get("totalComponents") for s in steps if s.get("totalComponents") is not None]
        rows.append(
            [
                str(stage.get("number", "?")),
                f"({len(steps)} step{'s' if len(steps) != 1 else ''})",
                str(stage.get("status", "-")),
                str(sum(totals)) if totals else "-",
                _clock(stage.get("startedAt")),
                _clock(stage.get("finishedAt")),
                _duration(stage.get("startedAt"), stage.get("finishedAt"), now),
                _one_line(stage.get("error")),
            ]
        )
        for step in steps:
            total = step.get("totalComponents")
            rows.append(
                [
                    "",
                    f"  {step.get('componentType', '?')}",
                    str(step.get("status", "-")),
                    "-" if total is None else str(total),
                    _clock(step.get("startedAt")),
                    _clock(step.get("finishedAt")),
                    _duration(step.get("startedAt"), step.get("finishedAt"), now),
                    _one_line(step.get("error")),
                ]
            )
    lines.extend(_table(headers, rows))
    return "\n".join(lines) + "\n"


def rerun_origin(meta: dict[str, Any]) -> str:
    """The task this one is a rerun of (its `nico.dev/rerun-of` label or annotation)."""
    from nicotask.kubectl_nico.rerun import RERUN_OF

    labels = meta.get("labels") or {}
    annotations = meta.get("annotations") or {}
    return str(annotations.get(RERUN_OF) or labels.get(RERUN_OF) or "")
