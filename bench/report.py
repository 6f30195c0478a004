"""The bench's output: a readable table and the same figures as JSON."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"
LATEST = RESULTS_DIR / "latest.json"

Row = tuple[str, str, str]


def fmt(value: Any, unit: str = "", digits: int = 1) -> str:
    """A number with `digits` decimals and a unit; '-' for a missing figure."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        text = str(value)
    elif isinstance(value, float):
        text = f"{value:.{digits}f}"
    else:
        text = str(value)
    return f"{text} {unit}".rstrip()


def fmt_pair(a: Any, b: Any, unit: str, digits: int = 1) -> str:
    """'a / b unit', each part '-' when missing."""
    return f"{fmt(a, digits=digits)} / {fmt(b, digits=digits)} {unit}".rstrip()


def _get(data: dict[str, Any], *path: str) -> Any:
    cur: Any = data
    for key in path:
        if not isinstance(cur, dict) or key not in cur:
            return None
        cur = cur[key]
    return cur


def _lat(summary: Any, keys: tuple[str, ...], unit: str = "ms") -> str:
    if not isinstance(summary, dict):
        return "-"
    return " / ".join(fmt(summary.get(k)) for k in keys) + f" {unit}"


def _done(section: dict[str, Any], done_key: str, total_key: str) -> str:
    done, total = section.get(done_key), section.get(total_key)
    return f"{fmt(done)} of {fmt(total)}"


def rows(results: dict[str, Any]) -> list[Row]:
    """The table's rows (section, figure, value) from the results dict."""
    out: list[Row] = []
    for key, when in (("floor_idle", "idle"), ("floor", "loaded")):
        floor = results.get(key)
        if not isinstance(floor, dict):
            continue
        out += [
            (
                "floor",
                f"{when}: merge-patch p50 / p95",
                _lat(floor.get("patch_ms"), ("p50", "p95")),
            ),
            (
                "floor",
                f"{when}: terminate p50 / p95",
                _lat(floor.get("terminate_ms"), ("p50", "p95")),
            ),
            ("floor", f"{when}: get p50 / p95 (info)", _lat(floor.get("get_ms"), ("p50", "p95"))),
            (
                "floor",
                f"{when}: floor = patch p50 + terminate p50",
                fmt(floor.get("floor_ms"), "ms"),
            ),
        ]
    start = results.get("start")
    if isinstance(start, dict):
        out += [
            ("start", "tasks Running", _done(start, "running", "tasks")),
            ("start", "total (first create -> last Running)", fmt(start.get("total_s"), "s")),
            ("start", "tasks/s", fmt(start.get("tasks_per_s"))),
            (
                "start",
                "create -> Running p50 / p95",
                _lat(start.get("latency_ms"), ("p50", "p95")),
            ),
        ]
    cancel = results.get("cancel")
    if isinstance(cancel, dict):
        out += [
            ("cancel", "tasks Terminated", _done(cancel, "terminated", "tasks")),
            (
                "cancel",
                "patch -> Terminated p50 / p95 / p99",
                _lat(cancel.get("latency_ms"), ("p50", "p95", "p99")),
            ),
            ("cancel", "wall (first patch -> last Terminated)", fmt(cancel.get("wall_s"), "s")),
            ("cancel", "cancels/s", fmt(cancel.get("cancels_per_s"))),
            ("cancel", "p50 / floor (loaded)", fmt(cancel.get("p50_over_floor"), "x", 2)),
            ("cancel", "p50 / floor (idle)", fmt(cancel.get("p50_over_idle_floor"), "x", 2)),
        ]
    shim = results.get("shim")
    if isinstance(shim, dict):
        for kind, label in (("fresh", "fresh cancel"), ("repeat", "repeat cancel (Terminated)")):
            part = shim.get(kind)
            if not isinstance(part, dict):
                continue
            codes = part.get("status_codes") or {}
            out += [
                (
                    "shim",
                    f"{label}: 202s",
                    f"{fmt(codes.get('202', 0))} of {fmt(part.get('requests'))}",
                ),
                ("shim", f"{label}: requests/s", fmt(part.get("requests_per_s"))),
                (
                    "shim",
                    f"{label}: HTTP p50 / p99",
                    _lat(part.get("latency_ms"), ("p50", "p99")),
                ),
                (
                    "shim",
                    f"{label}: p50 / p99 over raw PATCH p50",
                    fmt_pair(part.get("p50_over_patch"), part.get("p99_over_patch"), "x", 2),
                ),
            ]
        out += [
            (
                "shim",
                "raw API-server PATCH p50 / p99 (just before)",
                _lat(shim.get("raw_patch"), ("p50", "p99")),
            ),
            (
                "shim",
                "shim cancel -> Terminated p50 / p99",
                _lat(shim.get("terminated_ms"), ("p50", "p99")),
            ),
        ]
    rss = results.get("rss")
    if isinstance(rss, dict):
        if rss.get("skipped"):
            out.append(("rss", "operator RSS", "skipped (--rss-tasks 0)"))
        else:
            out += [
                ("rss", "tasks processed", _done(rss, "processed", "created")),
                ("rss", "NicoTasks present", fmt(rss.get("tasks_present"))),
                ("rss", "operator RSS before", fmt(rss.get("baseline_mb"), "MB")),
                ("rss", "operator RSS with them", fmt(rss.get("rss_mb"), "MB")),
                (
                    "rss",
                    "operator RSS delta per 1000 tasks",
                    fmt(rss.get("delta_mb_per_1000"), "MB"),
                ),
                ("rss", "operator peak RSS (VmHWM)", fmt(rss.get("hwm_mb"), "MB")),
                ("rss", "create (wall)", fmt(rss.get("create_s"), "s")),
                ("rss", "create -> all processed", fmt(rss.get("process_s"), "s")),
            ]
    return out


def render_table(results: dict[str, Any]) -> str:
    """The figures as an aligned text table, headed by the machine and the parameters."""
    machine = results.get("machine") or {}
    params = results.get("params") or {}
    head = (
        f"nicotask bench  {machine.get('time', '')}  nproc {machine.get('nproc', '?')}  "
        f"commit {str(machine.get('git_commit') or '?')[:12]}  "
        + "  ".join(f"{k}={v}" for k, v in params.items())
    )
    table = rows(results)
    w1 = max([len("section")] + [len(r[0]) for r in table])
    w2 = max([len("figure")] + [len(r[1]) for r in table])
    lines = [head, f"{'section':<{w1}}  {'figure':<{w2}}  value", f"{'-' * w1}  {'-' * w2}  -----"]
    lines += [f"{s:<{w1}}  {f:<{w2}}  {v}" for s, f, v in table]
    if results.get("runtime_s") is not None:
        lines.append(f"runtime {fmt(results['runtime_s'], 's')}")
    for err in results.get("errors") or []:
        lines.append(f"error: {err}")
    return "\n".join(lines)


def write_json(results: dict[str, Any], path: Path = LATEST) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=2) + "\n")
    tmp.replace(path)
    return path
