"""The README's second performance table: the dev server and the Temporal server side by side.

Two bench runs with the same flags, one per Temporal, one after the other:
`make bench BENCH_ARGS="--temporal both ..."` runs the phases on the CLI's dev
server on SQLite (bench/results/temporal-dev.json), then on the server from
go.temporal.io/server on PostgreSQL (bench/results/temporal-server.json). Each
column's ratios are against its own run's baselines (raw StartWorkflow,
Temporal's own start with a first workflow task, the loaded floor), so runs taken
under different load on a shared machine still compare. bench/readme.py writes the
block after each run; without both files it writes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .targets import get

BEGIN = (
    "<!-- BEGIN BENCH TEMPORAL TABLE (make bench writes it from"
    " bench/results/temporal-dev.json and temporal-server.json) -->"
)
END = "<!-- END BENCH TEMPORAL TABLE -->"
MISSING = "-"
# Who pays for a start or a cancel: nicotask's side and Temporal's.
NICOTASK_SIDE = ("operator", "worker", "shim", "kube-apiserver", "etcd")
TEMPORAL_SIDE = ("temporal", "postgres")


def _n(value: Any) -> float | None:
    return None if isinstance(value, bool) or not isinstance(value, int | float) else value


def _cell(r: dict[str, Any], paths: tuple[str, ...], render: Callable[..., str]) -> str:
    values = [_n(get(r, p)) for p in paths]
    return MISSING if any(v is None for v in values) else render(*values)


def _side(section: Any, names: tuple[str, ...]) -> float | None:
    if not isinstance(section, dict) or _n(section.get("total")) is None:
        return None
    return sum(_n(section.get(name)) or 0.0 for name in names)


def _cpu_split(r: dict[str, Any], path: str) -> str:
    section = get(r, path)
    ours, theirs = _side(section, NICOTASK_SIDE), _side(section, TEMPORAL_SIDE)
    if ours is None or theirs is None:
        return MISSING
    return f"{ours:.0f} ms nicotask + {theirs:.0f} ms Temporal"


def _steady(r: dict[str, Any]) -> str:
    cores = get(r, "steady.cpu_cores")
    theirs = _side(cores, TEMPORAL_SIDE)
    if theirs is None or not isinstance(cores, dict):
        return MISSING
    return f"{cores['total']:.2f} cores (Temporal {theirs:.2f})"


def rows(r: dict[str, Any]) -> list[tuple[str, str]]:
    """One column: (figure, value) for one run."""
    return [
        (
            "raw StartWorkflow / TerminateWorkflow",
            _cell(
                r, ("raw.start_per_s", "raw.terminate_per_s"), lambda s, t: f"{s:.1f}/s / {t:.1f}/s"
            ),
        ),
        (
            "Temporal's own start with a first workflow task",
            _cell(
                r,
                ("raw.first_task_per_s", "raw.start_per_s"),
                lambda f, s: f"{f:.1f}/s ({f / s:.2f} x raw start)",
            ),
        ),
        (
            "nicotask start (create -> Running)",
            _cell(
                r,
                ("start.tasks_per_s", "raw.first_task_per_s", "start.running", "start.tasks"),
                lambda s, f, run, n: (
                    f"{s:.1f}/s ({s / f:.2f} x Temporal's own; {run:.0f} of {n:.0f} Running)"
                ),
            ),
        ),
        ("CPU per start", _cpu_split(r, "start.cpu_ms_per_task")),
        ("steady CPU, all tasks Running and idle", _steady(r)),
        (
            "single cancels: p50 / p99",
            _cell(
                r,
                (
                    "steady_cancel.latency_ms.p50",
                    "steady_cancel.p50_over_floor",
                    "steady_cancel.latency_ms.p99",
                ),
                lambda p50, over, p99: (
                    f"{p50:.0f} ms ({over:.2f}x the loaded floor) / {p99:.0f} ms"
                ),
            ),
        ),
        (
            "burst cancel",
            _cell(
                r,
                (
                    "cancel.cancels_per_s",
                    "raw.terminate_per_s",
                    "cancel.terminated",
                    "cancel.tasks",
                ),
                lambda c, t, done, n: (
                    f"{c:.1f}/s ({c / t:.2f} x raw Terminate; {done:.0f} of {n:.0f} Terminated)"
                ),
            ),
        ),
        ("CPU per cancel in the burst", _cpu_split(r, "cancel.cpu_ms_per_task")),
        (
            "Temporal store writes per start / per cancel",
            _cell(
                r,
                ("calls.per_start.temporal_writes", "calls.per_cancel.temporal_writes"),
                lambda s, c: f"{s:.2f} / {c:.2f}",
            ),
        ),
    ]


def _note(label: str, r: dict[str, Any]) -> str:
    params, machine = r.get("params") or {}, r.get("machine") or {}
    load = machine.get("loadavg_start") or machine.get("loadavg") or []
    load_text = f", load average {load[0]:.1f} at its start" if load else ""
    return (
        f"{label}: `--tasks {params.get('tasks', '?')}`, phases "
        f"{params.get('phases', '?')}, {machine.get('time', '?')}, "
        f"{machine.get('nproc', '?')} cores{load_text}"
    )


def table(dev: dict[str, Any], server: dict[str, Any]) -> str:
    """The Markdown block between BEGIN and END (markers included)."""
    left, right = dict(rows(dev)), rows(server)
    lines = [
        BEGIN,
        "",
        "| figure | Temporal dev server (SQLite) | Temporal server (PostgreSQL) |",
        "|---|---|---|",
    ]
    lines += [f"| {figure} | {left[figure]} | {value} |" for figure, value in right]
    lines += ["", f"{_note('Dev server', dev)}; {_note('server', server)}.", "", END]
    return "\n".join(lines)


def refresh(text: str, dev: dict[str, Any], server: dict[str, Any]) -> str:
    """`text` (the README) with its block replaced; unchanged when it has no block."""
    head, sep, rest = text.partition(BEGIN)
    _, sep2, tail = rest.partition(END)
    if not sep or not sep2:
        return text
    return head + table(dev, server) + tail
