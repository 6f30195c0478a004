"""The README's performance table, generated from bench/results/latest.json.

`make bench` rewrites it after each run, so the README always shows the committed
figures and nothing else (and, from bench/results/temporal-dev.json and
temporal-server.json, the dev server and the Temporal server side by side:
bench/sidebyside.py);
`python -m bench.readme` rewrites it by hand, `--check` fails when it is not the
table latest.json gives (tests/unit/test_bench_readme.py).
How the figures moved over time belongs in bench/README.md, not here.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import sidebyside
from .report import LATEST, PAIR_DEV, PAIR_SERVER
from .targets import FAIL, PASS, get

README = Path(__file__).resolve().parents[1] / "README.md"
BEGIN = "<!-- BEGIN BENCH TABLE (make bench writes it from bench/results/latest.json) -->"
END = "<!-- END BENCH TABLE -->"
MISSING = "-"
# Components in the CPU rows, as the bench names them and as the table says them.
COMPONENTS = {
    "temporal": "Temporal",
    "kube-apiserver": "kube-apiserver",
    "worker": "worker",
    "operator": "operator",
    "etcd": "etcd",
    "shim": "shim",
    "redfish": "BMC emulators",
    "postgres": "PostgreSQL",
}


def _n(value: Any) -> float | None:
    return None if isinstance(value, bool) or not isinstance(value, int | float) else value


def _needs(*paths: str) -> Callable[[Callable[..., str]], Callable[[dict[str, Any]], str]]:
    """A cell from the figures at `paths`; MISSING when any of them is absent."""

    def wrap(cell: Callable[..., str]) -> Callable[[dict[str, Any]], str]:
        def render(results: dict[str, Any]) -> str:
            values = [_n(get(results, p)) for p in paths]
            return MISSING if any(v is None for v in values) else cell(*values)

        return render

    return wrap


def _cpu(section: dict[str, Any] | None, unit: str) -> str:
    """'85 ms: Temporal 33, kube-apiserver 21, ...' (largest first, zeros left out)."""
    if not isinstance(section, dict) or _n(section.get("total")) is None:
        return MISSING
    parts = sorted(
        (
            (v, COMPONENTS.get(k, k))
            for k, v in section.items()
            if k in COMPONENTS and _n(v) and round(v) > 0
        ),
        reverse=True,
    )
    detail = ", ".join(f"{name} {v:.0f}" for v, name in parts)
    return f"{section['total']:.0f} {unit}" + (f": {detail}" if detail else "")


def rows(r: dict[str, Any]) -> list[tuple[str, str]]:
    params = r.get("params") or {}
    tasks = params.get("tasks", "N")
    rate = get(r, "steady_cancel.rate_per_s") or params.get("steady_cancel_rate", "?")
    rss_tasks = f"{get(r, 'rss.tasks'):,}" if _n(get(r, "rss.tasks")) else "the"

    start = _needs(
        "start.running", "start.tasks", "start.total_s", "start.tasks_per_s", "raw.start_per_s"
    )(
        lambda run, n, s, per_s, raw: (
            f"{run:.0f} of {n:.0f} in {s:.0f} s ({per_s}/s; raw StartWorkflow {raw}/s)"
        )
    )
    first = _needs("raw.first_task_per_s", "raw.start_per_s")(
        lambda f, raw: f"{f}/s ({f / raw:.2f} x raw StartWorkflow)"
    )
    writes = _needs("calls.per_start.temporal_writes", "calls.per_cancel.temporal_writes")(
        lambda s, c: f"{s:.2f} / {c:.2f}"
    )
    steady = _needs("steady.cpu_cores.total")(lambda c: f"{c:.2f} cores")
    single = _needs(
        "steady_cancel.latency_ms.p50",
        "steady_cancel.p50_over_floor",
        "steady_cancel.floor_ms",
        "steady_cancel.latency_ms.p99",
    )(
        lambda p50, over, floor, p99: (
            f"{p50:.0f} ms ({over}x the loaded floor of {floor:.0f} ms) / {p99:.0f} ms"
        )
    )
    burst = _needs(
        "cancel.terminated", "cancel.tasks", "cancel.cancels_per_s", "raw.terminate_per_s"
    )(
        lambda done, n, per_s, raw: (
            f"{done:.0f} of {n:.0f} Terminated, {per_s}/s (raw TerminateWorkflow {raw}/s)"
        )
    )
    api = _needs("calls.per_start.apiserver", "calls.per_cancel.apiserver")(
        lambda s, c: f"{s:.2f} / {c:.2f}"
    )
    rpcs = _needs("calls.per_start.temporal", "calls.per_cancel.temporal")(
        lambda s, c: f"{s:.2f} / {c:.2f}"
    )
    rss = _needs("rss.operator_mb")(lambda mb: f"{mb:.1f} MB")
    fresh = _needs(
        "shim.fresh.requests_per_s", "shim.fresh.latency_ms.p50", "shim.fresh.p50_over_patch"
    )(
        lambda per_s, p50, over: (
            f"{per_s:.0f}/s, p50 {p50:.0f} ms ({over}x a raw PATCH with as many in flight)"
        )
    )
    repeat = _needs(
        "shim.repeat.requests_per_s", "shim.repeat.latency_ms.p50", "shim.repeat.latency_ms.p99"
    )(lambda per_s, p50, p99: f"{per_s:,.0f}/s, p50 {p50:.1f} ms, p99 {p99:.1f} ms (no API call)")
    return [
        ("tasks Running after the start phase", start(r)),
        ("Temporal alone: StartWorkflow + a first workflow task", first(r)),
        ("CPU per started task, all components", _cpu(get(r, "start.cpu_ms_per_task"), "ms")),
        ("Temporal store writes per start / per cancel", writes(r)),
        (f"CPU of the whole system, {tasks} tasks Running and idle", steady(r)),
        (
            f"single cancels at {rate:g}/s while they run: patch -> Terminated p50 / p99"
            if _n(rate)
            else "single cancels: patch -> Terminated p50 / p99",
            single(r),
        ),
        (
            f"burst cancel of every Running task ({params.get('concurrency', '?')} in flight)",
            burst(r),
        ),
        ("CPU per cancel in the burst", _cpu(get(r, "cancel.cpu_ms_per_task"), "ms")),
        ("API-server calls per start / per cancel", api(r)),
        ("Temporal RPCs per start / per cancel", rpcs(r)),
        (f"operator RSS with {rss_tasks} NicoTasks present", rss(r)),
        (f"REST shim, fresh cancels ({params.get('shim_concurrency', '?')} in flight)", fresh(r)),
        ("REST shim, repeated cancels of Terminated tasks", repeat(r)),
    ]


def table(results: dict[str, Any]) -> str:
    """The Markdown block between BEGIN and END (markers included)."""
    params = results.get("params") or {}
    machine = results.get("machine") or {}
    targets = results.get("targets") or []
    met = sum(1 for t in targets if t.get("verdict") == PASS)
    failed = [t["target"] for t in targets if t.get("verdict") == FAIL]
    lines = [BEGIN, "", "| figure | value |", "|---|---|"]
    lines += [f"| {figure} | {value} |" for figure, value in rows(results)]
    lines += [
        "",
        f"Measured with `--tasks {params.get('tasks', '?')}` on "
        f"{machine.get('nproc', '?')} cores ({machine.get('cpu', '?')}); "
        f"{met} of {len(targets)} targets met"
        + (f" (not: {'; '.join(failed)})" if failed else "")
        + ".",
        "",
        END,
    ]
    return "\n".join(lines)


def refresh(text: str, results: dict[str, Any]) -> str:
    """`text` (the README) with its block replaced by the table of `results`."""
    head, sep, rest = text.partition(BEGIN)
    _, sep2, tail = rest.partition(END)
    if not sep or not sep2:
        raise ValueError(f"README.md has no {BEGIN!r} ... {END!r} block")
    return head + table(results) + tail


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    results = json.loads(LATEST.read_text())
    current = README.read_text()
    wanted = refresh(current, results)
    # The dev server and the server on PostgreSQL side by side, once both runs exist.
    if PAIR_DEV.exists() and PAIR_SERVER.exists():
        wanted = sidebyside.refresh(
            wanted, json.loads(PAIR_DEV.read_text()), json.loads(PAIR_SERVER.read_text())
        )
    if "--check" in argv:
        if wanted != current:
            print(
                "README.md's performance tables are not bench/results/latest.json's "
                "(and temporal-*.json's): run `python -m bench.readme`",
                file=sys.stderr,
            )
            return 1
        return 0
    if wanted != current:
        README.write_text(wanted)
        print("README.md: performance tables rewritten from bench/results/latest*.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
