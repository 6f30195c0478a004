"""The bench's targets next to the figures: PASS / FAIL / not reached, as information.

The targets are stated for `--tasks 1000` (and 10,000 NicoTasks present for the
RSS one); a smaller run still gets a verdict, flagged in the table's header.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

PASS, FAIL, NOT_REACHED, NOT_APPLICABLE = "PASS", "FAIL", "not reached", "n/a"
TARGET_TASKS = 1000
RSS_TARGET_TASKS = 10_000


def get(data: dict[str, Any], path: str) -> Any:
    """data['a']['b'] for path 'a.b'; None when any part is missing."""
    cur: Any = data
    for key in path.split("."):
        if not isinstance(cur, dict) or key not in cur:
            return None
        cur = cur[key]
    return cur


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


@dataclass(frozen=True)
class Target:
    name: str  # what it says
    figure: str  # the dotted key of the measured figure
    # (figure, results) -> (limit, ok, note); limit None when it cannot be computed
    check: Callable[[float, dict[str, Any]], tuple[float | None, bool, str]]


def _at_most(limit: float) -> Callable[[float, dict[str, Any]], tuple[float | None, bool, str]]:
    return lambda v, _r: (limit, v <= limit, "")


def _at_least(limit: float) -> Callable[[float, dict[str, Any]], tuple[float | None, bool, str]]:
    return lambda v, _r: (limit, v >= limit, "")


def _times(
    factor: float, other: str, at_least: bool
) -> Callable[[float, dict[str, Any]], tuple[float | None, bool, str]]:
    def check(v: float, r: dict[str, Any]) -> tuple[float | None, bool, str]:
        base = _num(get(r, other))
        if base is None:
            return None, False, f"{other} missing"
        limit = round(factor * base, 3)
        return limit, (v >= limit if at_least else v <= limit), ""

    return check


def _equals(other: str) -> Callable[[float, dict[str, Any]], tuple[float | None, bool, str]]:
    def check(v: float, r: dict[str, Any]) -> tuple[float | None, bool, str]:
        want = _num(get(r, other))
        if want is None:
            return None, False, f"{other} missing"
        return want, v == want and v > 0, ""

    return check


def _half_of_raw(name: str, figure: str, raw: str) -> Target:
    """A rate that must reach half of the raw Temporal rate `raw` measured in the same run."""
    return Target(name, figure, _times(0.5, raw, True))


def _rss(v: float, r: dict[str, Any]) -> tuple[float | None, bool, str]:
    """<= 150 MB with 10,000 tasks present. With fewer, over 150 MB already fails (RSS only
    grows with tasks), under it proves nothing: n/a."""
    tasks = _num(get(r, "rss.tasks")) or 0
    if tasks >= RSS_TARGET_TASKS:
        return 150.0, v <= 150.0, ""
    note = f"only {tasks:.0f} tasks present"
    return (150.0, False, note) if v > 150.0 else (None, False, note)


TARGETS: tuple[Target, ...] = (
    Target("start: every task Running", "start.running", _equals("params.tasks")),
    _half_of_raw(
        "start: tasks/s >= 0.5 x raw StartWorkflow/s", "start.tasks_per_s", "raw.start_per_s"
    ),
    Target("steady: CPU of the idle system <= 0.3 cores", "steady.cpu_cores.total", _at_most(0.3)),
    Target(
        "steady cancel: p50 <= 3 x loaded floor",
        "steady_cancel.latency_ms.p50",
        _times(3, "floor.floor_ms", False),
    ),
    Target("steady cancel: p99 <= 250 ms", "steady_cancel.latency_ms.p99", _at_most(250)),
    Target("burst: every task Terminated", "cancel.terminated", _equals("params.tasks")),
    _half_of_raw(
        "burst: cancels/s >= 0.5 x raw TerminateWorkflow/s",
        "cancel.cancels_per_s",
        "raw.terminate_per_s",
    ),
    Target("API-server calls per cancel <= 3", "calls.per_cancel.apiserver", _at_most(3)),
    Target("API-server calls per start <= 5", "calls.per_start.apiserver", _at_most(5)),
    Target("operator RSS <= 150 MB (10,000 tasks)", "rss.operator_mb", _rss),
    Target(
        "shim fresh cancel p50 <= 2 x raw PATCH p50",
        "shim.fresh.p50_over_patch",
        _at_most(2),
    ),
    Target("shim fresh cancels >= 300 requests/s", "shim.fresh.requests_per_s", _at_least(300)),
    Target("shim repeated cancel p99 <= 20 ms", "shim.repeat.latency_ms.p99", _at_most(20)),
)


def evaluate(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per target: name, figure key, value, limit, verdict, note."""
    out = []
    for t in TARGETS:
        value = _num(get(results, t.figure))
        row: dict[str, Any] = {"target": t.name, "figure": t.figure, "value": value}
        if value is None:
            row.update(limit=None, verdict=NOT_REACHED, note="figure missing")
        else:
            limit, ok, note = t.check(value, results)
            if limit is None:
                row.update(limit=None, verdict=NOT_APPLICABLE, note=note)
            else:
                row.update(limit=limit, verdict=PASS if ok else FAIL, note=note)
        out.append(row)
    return out


def scale_note(results: dict[str, Any]) -> str:
    """A warning when the run is smaller than the one the targets are stated for."""
    tasks = _num(get(results, "params.tasks"))
    if tasks is not None and tasks < TARGET_TASKS:
        return f"(targets are stated for --tasks {TARGET_TASKS}; this run had {tasks:.0f})"
    return ""
