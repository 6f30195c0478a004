"""The `plugin-cancel` phase: `kubectl nico cancel --all --yes` on N Running tasks.

Runs after the burst cancel, whose N tasks are Terminated by then and whose racks
are free again: N new tasks (phase label `plugin`) are started on the same racks
and waited Running, then the plugin is run as a user would, as a process of its
own (`kubectl-nico cancel --all --yes -n <bench namespace>`): it lists every task
of the namespace (the earlier phases' finished ones too, which it skips), and
patches the N Running ones, 32 in flight (its default). Figures, next to the
burst's raw patches (`cancel`, 20 in flight, one patch per task, no list):
`plugin_s` (the process, from exec to exit: start-up, SelfSubjectReview, the
list, the patches), `wall_s` (exec -> last Terminated seen, as the burst's first
patch -> last Terminated), `cancels_per_s`, and the plugin's own summary line.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import objects as o
from .env import progress
from .measure import rate, summarize
from .watch import TERMINAL

if TYPE_CHECKING:
    from .phases import Phases

PLUGIN = Path(sys.executable).parent / "kubectl-nico"


async def plugin_cancel(ph: Phases) -> dict[str, Any]:
    from .phases import _first_error, _report_wait

    n = ph.tasks
    timeout = ph.cfg.start_timeout()
    progress(f"plugin-cancel: starting {n} tasks on the burst's racks, at most {timeout:.0f}s")
    deadline = time.monotonic() + timeout
    names, _, errors = await ph._start_tasks("plugin", 0, n, deadline)
    if errors:
        ph.errors.append(f"plugin-cancel: create: {_first_error(errors)}")
    running = await ph._wait_running("plugin-cancel", names, deadline)
    if len(running) < n:
        ph.errors.append(f"plugin-cancel: {len(running)} of {n} Running within {timeout:.0f}s")
    progress(f"plugin-cancel: kubectl nico cancel --all --yes on {len(running)} Running tasks")
    budget = ph.cfg.burst_timeout()
    before = await ph.scrape()
    t0 = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        str(PLUGIN), "cancel", "--all", "--yes", "-n", o.NAMESPACE,
        env={**os.environ, "KUBECONFIG": ph.benv.kubeconfig},
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), timeout=budget)
    plugin_s = round(time.monotonic() - t0, 3)
    summary_line = (out.decode().strip().splitlines() or ["-"])[-1]
    progress(f"plugin-cancel: exit {proc.returncode} after {plugin_s}s: {summary_line}")
    if proc.returncode != 0:
        ph.errors.append(f"plugin-cancel: exit {proc.returncode}: {err.decode()[-300:]}")
    await ph.tw.wait_for(
        running,
        TERMINAL,
        max(1.0, t0 + budget - time.monotonic()),
        "plugin-cancel: Terminated",
        _report_wait,
    )
    done = [nm for nm in running if ph.tw.seen_at(nm, "Terminated") is not None]
    if len(done) < len(running):
        ph.errors.append(f"plugin-cancel: {len(done)} of {len(running)} Terminated")
    lat, wall, per_cancel = await ph._arrivals(
        done, "Terminated", dict.fromkeys(running, t0), before, n
    )
    return {
        "tasks": n,
        "running": len(running),
        "terminated": len(done),
        "plugin_s": plugin_s,
        "wall_s": wall,
        "cancels_per_s": rate(len(done), wall),
        "latency_ms": summarize(lat, 1000),  # from the plugin's exec, for every task
        "exit_code": proc.returncode,
        "summary": summary_line,
        "calls_per_cancel": {k: per_cancel[k] for k in ("apiserver", "temporal")},
    }
