"""The bench's output: a readable table and the same figures as JSON."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from .targets import evaluate, scale_note

RESULTS_DIR = Path(__file__).resolve().parent / "results"
LATEST = RESULTS_DIR / "latest.json"
# The side-by-side pair (`--temporal both`; `--temporal server` writes the second alone):
# the same phases on the dev server and on the Temporal server on PostgreSQL.
PAIR_DEV = RESULTS_DIR / "temporal-dev.json"
PAIR_SERVER = RESULTS_DIR / "temporal-server.json"

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


def _cpu_row(phase: str, figures: dict[str, Any]) -> list[tuple[str, str, str]]:
    """CPU ms per task of each component over the phase, and their sum."""
    cpu = figures.get("cpu_ms_per_task")
    if not isinstance(cpu, dict):
        return []
    parts = {k: v for k, v in cpu.items() if k not in ("total", "bench")}
    return [
        (
            phase,
            "CPU ms per task (" + ", ".join(parts) + ")",
            " / ".join(fmt(v) for v in parts.values())
            + f" = {fmt(cpu.get('total'))}"
            + f" (and the bench itself: {fmt(cpu.get('bench'))})",
        )
    ]


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
    raw = results.get("raw")
    if isinstance(raw, dict):
        out += [
            ("raw", "StartWorkflow/s (Temporal, bench's concurrency)", fmt(raw.get("start_per_s"))),
            ("raw", "TerminateWorkflow/s", fmt(raw.get("terminate_per_s"))),
            (
                "raw",
                "StartWorkflow + first workflow task/s (empty workflow, SDK worker)",
                fmt(raw.get("first_task_per_s")),
            ),
            (
                "raw",
                "StartWorkflow / Terminate p50",
                fmt_pair(_get(raw, "start_ms", "p50"), _get(raw, "terminate_ms", "p50"), "ms"),
            ),
        ]
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
        out += _cpu_row("start", start)
    out += _steady_rows(results)
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
        out += _cpu_row("cancel", cancel)
    pc = results.get("plugin_cancel")
    if isinstance(pc, dict):
        out += [
            ("plugin cancel", "kubectl nico cancel --all: tasks Terminated",
             _done(pc, "terminated", "tasks")),
            ("plugin cancel", "the plugin's process (list + patches, 32 in flight)",
             fmt(pc.get("plugin_s"), "s")),
            ("plugin cancel", "wall (exec -> last Terminated; burst: first patch ->)",
             fmt(pc.get("wall_s"), "s")),
            ("plugin cancel", "cancels/s", fmt(pc.get("cancels_per_s"))),
            ("plugin cancel", "its summary", fmt(pc.get("summary"))),
        ]  # fmt: skip
    gr = results.get("graceful")
    if isinstance(gr, dict):
        out += [
            ("graceful", "stopped in stage 1: Terminated (as expected)",
             f"{fmt(gr.get('terminated'))} of {fmt(gr.get('in_stage', gr.get('running')))}"
             f" ({fmt(gr.get('as_expected'))})"),
            ("graceful", "stopped too late to skip stage 2 (late, not measured)",
             f"{fmt(gr.get('late'))} of {fmt(gr.get('running'))}"),
            ("graceful", "Running seen -> patch sent p50 / p99 (the bench's own delay)",
             _lat(gr.get("patch_after_running_ms"), ("p50", "p99"))),
            ("graceful", f"patch -> Terminated p50 / p99 (incl. <= {fmt(gr.get('stage_s'))} s"
             " of running stage)", _lat(gr.get("latency_ms"), ("p50", "p99"))),
            ("graceful", "running stage's end -> Terminated p50 / p99 (hard: cancel's patch ->)",
             _lat(gr.get("after_stage_ms"), ("p50", "p99"))),
        ]  # fmt: skip
    out += _calls_rows(results)
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
                    f"{label}: p50 / p99 over raw PATCH p50 (same in flight)",
                    fmt_pair(part.get("p50_over_patch"), part.get("p99_over_patch"), "x", 2),
                ),
                (
                    "shim",
                    f"{label}: p50 over a lone raw PATCH p50",
                    fmt(part.get("p50_over_sequential_patch")),
                ),
            ]
        out += [
            (
                "shim",
                "raw API-server PATCH p50 / p99, one at a time (just before)",
                _lat(shim.get("raw_patch"), ("p50", "p99")),
            ),
            (
                "shim",
                "raw API-server PATCH p50 / p99, as many in flight as the shim's",
                _lat((shim.get("raw_patch_concurrent") or {}).get("latency_ms"), ("p50", "p99")),
            ),
            (
                "shim",
                "raw API-server PATCH requests/s, as many in flight",
                fmt((shim.get("raw_patch_concurrent") or {}).get("requests_per_s")),
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
            out.append(("rss", "operator RSS", "skipped"))
        elif rss.get("live"):
            out += [
                ("rss", "NicoTasks present", fmt(rss.get("tasks"))),
                ("rss", "live operator RSS (no restart)", fmt(rss.get("operator_mb"), "MB")),
            ]
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


def _steady_rows(results: dict[str, Any]) -> list[Row]:
    out: list[Row] = []
    steady = results.get("steady")
    if isinstance(steady, dict):
        cores = steady.get("cpu_cores") or {}
        running = fmt(steady.get("tasks_running"))
        out.append(("steady", "tasks Running (idle) over the window", running))
        out.append(("steady", "window", fmt(steady.get("window_s"), "s")))
        for name, value in cores.items():
            if name != "total":
                out.append(("steady", f"CPU {name}", fmt(value, "cores", 3)))
        out.append(("steady", "CPU total", fmt(cores.get("total"), "cores", 3)))
        req = steady.get("requests") or {}
        out += [
            ("steady", "API-server requests/s", fmt(_get(req, "apiserver", "per_s"), digits=2)),
            ("steady", "Temporal RPCs/s", fmt(_get(req, "temporal", "per_s"), digits=2)),
        ]
    sc = results.get("steady_cancel")
    if isinstance(sc, dict):
        out += [
            (
                "steady cancel",
                f"single cancels at {fmt(sc.get('rate_per_s'))}/s: Terminated",
                _done(sc, "terminated", "cancels"),
            ),
            (
                "steady cancel",
                "patch -> Terminated p50 / p99",
                _lat(sc.get("latency_ms"), ("p50", "p99")),
            ),
            ("steady cancel", "p50 / floor (loaded)", fmt(sc.get("p50_over_floor"), "x", 2)),
        ]
    return out


def _calls_rows(results: dict[str, Any]) -> list[Row]:
    out: list[Row] = []
    for key, label in (("per_start", "start"), ("per_cancel", "cancel")):
        part = _get(results, "calls", key)
        if not isinstance(part, dict):
            continue
        out += [
            ("calls", f"API-server calls per {label}", fmt(part.get("apiserver"), digits=2)),
            ("calls", f"Temporal RPCs per {label}", fmt(part.get("temporal"), digits=2)),
            (
                "calls",
                f"Temporal store writes per {label}",
                fmt(part.get("temporal_writes"), digits=2),
            ),
        ]
    raw = _get(results, "raw", "persistence_per_workflow")
    if isinstance(raw, dict):
        out.append(
            (
                "calls",
                "Temporal store writes per raw start + terminate",
                fmt(raw.get("writes_per_item"), digits=2),
            )
        )
    return out


def _figure(value: Any) -> str:
    """A target's figure: whole numbers without decimals, others with two."""
    if isinstance(value, float) and value.is_integer():
        return fmt(int(value))
    return fmt(value, digits=2)


def target_rows(results: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(verdict, target, value, limit) per target of bench/targets.py (information, not an
    exit code)."""
    out = []
    for t in results.get("targets") or evaluate(results):
        note = f" ({t['note']})" if t.get("note") else ""
        out.append((t["verdict"], t["target"], _figure(t["value"]), _figure(t["limit"]) + note))
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
    targets = target_rows(results)
    if targets:
        wv = max(len(t[0]) for t in targets)
        wt = max(len(t[1]) for t in targets)
        wn = max(len(t[2]) for t in targets)
        lines += ["", f"targets {scale_note(results)}".rstrip()]
        lines += [f"{v:<{wv}}  {t:<{wt}}  {n:>{wn}}  (limit {lim})" for v, t, n, lim in targets]
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
