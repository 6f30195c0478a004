"""`python -m bench` (`make bench`): figures of the operator and the shim.

Starts a fresh local system (kube-apiserver + etcd, Temporal dev server or server,
sushy-tools, worker, operator with a 30 s reconcile, shim), measures every
phase side by side in one run, prints a table (with the targets of
bench/targets.py next to the figures, PASS / FAIL as information: the exit code
says only whether the bench itself ran), writes the same figures to
bench/results/latest.json and the README's performance table, and stops it all.

  --tasks N          tasks Running at once: start, steady, burst cancel (default 200)
  --rss-tasks M      NicoTasks created for the operator RSS figure (default 10000;
                     0: the live operator's RSS after the other phases)
  --shim-cancels K   tasks cancelled through the REST shim (default 100)
  --phases LIST      which phases (default all):
                     raw,start,steady,steady-cancel,shim,cancel,plugin-cancel,graceful,rss
  --run-dir DIR      run folder of the environment (default: a temporary folder)
  --temporal MODE    dev (default: the Temporal CLI's dev server on SQLite), server
                     (go.temporal.io/server on PostgreSQL, as NICOTASK_TEMPORAL=server
                     starts it; its CPU and PostgreSQL's are counted like the others';
                     figures to bench/results/temporal-server.json, not latest.json) or
                     both (a run on each with the same flags, one after the other:
                     temporal-dev.json and temporal-server.json, the README's
                     side-by-side table)
  --quick            tasks 50, rss-tasks 1000, shim-cancels 30, steady 20 s
  --profile DIR      profile the start and burst-cancel phases (bench/profiling.py): py-spy
                     on the operator, worker and shim, kube-apiserver's pprof (started with
                     --profiling); DIR/summary.txt says where each process's CPU goes
                     (with --temporal both: DIR/dev and DIR/server)
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import traceback
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, TypeVar

from .env import BenchEnv, progress
from .graceful import graceful
from .machine import machine_info
from .phases import GRACEFUL_TASKS, PHASES, Phases, Settings
from .plugincancel import plugin_cancel
from .profiling import DEFAULT_RATE, Profiler
from .readme import main as write_readme_table
from .report import LATEST, PAIR_DEV, PAIR_SERVER, render_table, write_json
from .targets import evaluate

T = TypeVar("T")
MAX_TASKS = 1000
PHASE_GRACE_S = 120.0  # beyond a phase's own bounded waits: a hung call must not hang the run


def _phase_list(text: str) -> tuple[str, ...]:
    wanted = [p.strip() for p in text.split(",") if p.strip()]
    unknown = [p for p in wanted if p not in PHASES]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown phase(s) {', '.join(unknown)}; choose from {','.join(PHASES)}"
        )
    # The plugin's cancel and the graceful stops run on the burst cancel's racks, freed by it.
    if {"plugin-cancel", "graceful"} & set(wanted) and "cancel" not in wanted:
        wanted.append("cancel")
    # The steady figures and the burst cancel need the start phase's Running tasks.
    if {"steady", "cancel"} & set(wanted) and "start" not in wanted:
        wanted.append("start")
    return tuple(p for p in PHASES if p in wanted)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", type=int, default=None, help="N Running tasks (default 200, <= 1000)")
    p.add_argument(
        "--rss-tasks",
        type=int,
        default=None,
        help="M NicoTasks for the RSS figure (default 10000; 0: the live operator)",
    )
    p.add_argument("--shim-cancels", type=int, default=None, help="K shim cancels (default 100)")
    p.add_argument(
        "--phases",
        type=_phase_list,
        default=PHASES,
        help=f"comma-separated subset of {','.join(PHASES)} (default all; steady and cancel"
        " bring start, plugin-cancel and graceful bring cancel)",
    )
    p.add_argument("--concurrency", type=int, default=20, help="creates/patches in flight (20)")
    p.add_argument("--shim-concurrency", type=int, default=32, help="shim requests in flight (32)")
    p.add_argument("--raw-workflows", type=int, default=None, help="raw Temporal calls (= N)")
    p.add_argument("--steady-seconds", type=float, default=None, help="CPU window (60 s)")
    p.add_argument("--steady-settle", type=float, default=10.0, help="wait before it (10 s)")
    p.add_argument("--steady-cancel-rate", type=float, default=5.0, help="cancels/s (5)")
    p.add_argument(
        "--steady-cancel-seconds", type=float, default=20.0, help="steady cancels for (20 s)"
    )
    p.add_argument("--run-dir", default=None, help="run folder (default: a temporary folder)")
    p.add_argument(
        "--temporal",
        choices=("dev", "server", "both"),
        default="dev",
        help="dev: the CLI's dev server (default); server: the Temporal server on PostgreSQL"
        " (figures to bench/results/temporal-server.json); both: a run on each, one after"
        " the other (bench/results/temporal-dev.json and temporal-server.json)",
    )
    p.add_argument(
        "--quick", action="store_true", help="tasks 50, rss-tasks 1000, shim 30, steady 20 s"
    )
    p.add_argument("--keep-run-dir", action="store_true", help="keep the temporary run folder")
    p.add_argument(
        "--profile",
        metavar="DIR",
        default=None,
        help="profile the start and burst-cancel phases into DIR (summary.txt)",
    )
    p.add_argument("--profile-rate", type=int, default=DEFAULT_RATE, help="py-spy samples/s (200)")
    args = p.parse_args(argv)
    quick = args.quick
    if args.tasks is None:
        args.tasks = 50 if quick else 200
    if args.rss_tasks is None:
        args.rss_tasks = 1000 if quick else 10000
    if args.shim_cancels is None:
        args.shim_cancels = 30 if quick else 100
    if args.steady_seconds is None:
        args.steady_seconds = 20.0 if quick else 60.0
    if args.raw_workflows is None:
        args.raw_workflows = args.tasks
    if not 1 <= args.tasks <= MAX_TASKS:
        p.error(f"--tasks must be within 1..{MAX_TASKS}")
    if args.rss_tasks < 0 or args.shim_cancels < 0:
        p.error("--rss-tasks and --shim-cancels must be >= 0")
    if min(args.concurrency, args.shim_concurrency, args.raw_workflows) < 1:
        p.error("--concurrency, --shim-concurrency and --raw-workflows must be >= 1")
    if min(args.steady_seconds, args.steady_cancel_rate, args.steady_cancel_seconds) <= 0:
        p.error("--steady-seconds, --steady-cancel-rate and --steady-cancel-seconds must be > 0")
    return args


def settings(args: argparse.Namespace) -> Settings:
    return Settings(
        tasks=args.tasks,
        rss_tasks=args.rss_tasks,
        shim_cancels=args.shim_cancels,
        concurrency=args.concurrency,
        shim_concurrency=args.shim_concurrency,
        raw_workflows=args.raw_workflows,
        steady_settle_s=args.steady_settle,
        steady_s=args.steady_seconds,
        steady_cancel_rate=args.steady_cancel_rate,
        steady_cancel_s=args.steady_cancel_seconds,
        phases=args.phases,
    )


def _floor_line(label: str, floor: dict[str, Any]) -> None:
    progress(
        f"floor ({label}): patch p50 {floor['patch_ms']['p50']} ms + terminate p50 "
        f"{floor['terminate_ms']['p50']} ms = {floor['floor_ms']} ms"
    )


class Runner:
    """Runs the selected phases in order; each under a hard time cap, timed in phase_s."""

    def __init__(self, ph: Phases, results: dict[str, Any]) -> None:
        self.ph = ph
        self.results = results
        self.phase_s: dict[str, float] = results.setdefault("phase_s", {})

    async def run(
        self, name: str, coro: Awaitable[T], cap: float, required: bool = False
    ) -> T | None:
        """The phase's result; None (and an entry in `errors`) when it failed or ran past
        `cap`, so the next phases still run. A `required` phase's failure ends the run."""
        t0 = time.monotonic()
        try:
            return await asyncio.wait_for(coro, cap)
        except TimeoutError:
            self.ph.errors.append(f"{name}: not reached within {cap:.0f}s (phase cut short)")
            progress(f"{name}: cut short after {cap:.0f}s")
            if required:
                raise
            return None
        except Exception as exc:
            if required:
                raise
            traceback.print_exc()
            self.ph.errors.append(f"{name}: {type(exc).__name__}: {exc}"[:500])
            return None
        finally:
            self.phase_s[name] = round(time.monotonic() - t0, 1)


async def run_phases(ph: Phases, results: dict[str, Any]) -> None:
    cfg = ph.cfg
    on = set(cfg.phases)
    r = Runner(ph, results)
    await ph.open()
    try:
        await r.run("setup", ph.setup(), 300 + cfg.racks * 0.2, required=True)
        if "raw" in on:
            results["raw"] = await r.run("raw", ph.raw(), ph.raw_budget() + PHASE_GRACE_S)
        # The floor twice: on the idle system, and under the load the cancels run in.
        idle = await r.run(
            "floor_idle",
            ph.floor("sequentially, on the idle system (before the start phase)"),
            PHASE_GRACE_S,
        )
        results["floor_idle"] = idle
        if idle:
            _floor_line("idle", idle)
        running: list[str] = []
        if "start" in on:
            got = await r.run("start", ph.start(), cfg.start_timeout() + PHASE_GRACE_S)
            if got is not None:
                results["start"], running, per_start = got
                results.setdefault("calls", {})["per_start"] = per_start
        if "steady" in on and running:
            results["steady"] = await r.run(
                "steady", ph.steady(running), cfg.steady_settle_s + cfg.steady_s + PHASE_GRACE_S
            )
        floor = await r.run(
            "floor",
            ph.floor(f"sequentially, with {len(running)} tasks of the start phase Running"),
            PHASE_GRACE_S,
        )
        results["floor"] = floor
        floor_ms = floor["floor_ms"] if floor else None
        if floor:
            ph.floor_patch_p50 = floor["patch_ms"]["p50"]
            _floor_line("loaded", floor)
        extra_n = cfg.steady_cancels + cfg.shim_tasks
        start_rate = (results.get("start") or {}).get("tasks_per_s")
        extra = await r.run(
            "extra",
            ph.extra_tasks(start_rate),
            cfg.extra_timeout(extra_n, start_rate) + PHASE_GRACE_S,
        )
        steady_victims, shim_tasks = extra if extra else ([], [])
        if "steady-cancel" in on and steady_victims:
            results["steady_cancel"] = await r.run(
                "steady_cancel",
                ph.steady_cancel(steady_victims, floor_ms),
                cfg.steady_cancel_s + 30 + PHASE_GRACE_S,
            )
        if "shim" in on and shim_tasks:
            results["shim"] = await r.run(
                "shim", ph.shim(shim_tasks), 90 + cfg.shim_cancels * 0.5 + PHASE_GRACE_S
            )
        if "cancel" in on and running:
            idle_ms = idle["floor_ms"] if idle else None
            got_c = await r.run(
                "cancel",
                ph.cancel(running, floor_ms, idle_ms),
                cfg.burst_timeout() + PHASE_GRACE_S,
            )
            if got_c is not None:
                results["cancel"], per_cancel = got_c
                results.setdefault("calls", {})["per_cancel"] = per_cancel
        if "plugin-cancel" in on and results.get("cancel"):
            results["plugin_cancel"] = await r.run(
                "plugin_cancel",
                plugin_cancel(ph),
                cfg.start_timeout() + cfg.burst_timeout() + PHASE_GRACE_S,
            )
        if "graceful" in on and results.get("cancel"):
            count = min(cfg.tasks, GRACEFUL_TASKS)
            results["graceful"] = await r.run(
                "graceful", graceful(ph, count),
                cfg.extra_timeout(count) + cfg.burst_timeout() + PHASE_GRACE_S,
            )  # fmt: skip
        if "rss" in on:
            if cfg.rss_tasks:
                results["rss"] = await r.run(
                    "rss", ph.rss(), 600 + cfg.rss_tasks * 0.1 + PHASE_GRACE_S
                )
            else:
                results["rss"] = ph.rss_live()
    finally:
        await ph.close()


def run_once(args: argparse.Namespace, cfg: Settings, temporal: str) -> tuple[int, Path]:
    """One run of the phases on a fresh system with `temporal` (dev or server); its figures
    written where that mode's go (RESULTS); the exit code and the file."""
    params: dict[str, Any] = {
        "tasks": cfg.tasks,
        "rss_tasks": cfg.rss_tasks,
        "shim_cancels": cfg.shim_cancels,
        "quick": args.quick,
        "phases": ",".join(cfg.phases),
        "concurrency": cfg.concurrency,
        "shim_concurrency": cfg.shim_concurrency,
        "raw_workflows": cfg.raw_workflows,
        "steady_s": cfg.steady_s,
        "steady_cancel_rate": cfg.steady_cancel_rate,
        "steady_cancel_s": cfg.steady_cancel_s,
        "temporal": temporal,
    }
    results: dict[str, Any] = {"machine": machine_info(), "params": params}
    t0 = time.monotonic()
    benv = BenchEnv.create(
        args.run_dir,
        worker_activities=cfg.racks + 50,
        temporal_mode=temporal,
        apiserver_profiling=args.profile is not None,
    )
    params["run_dir"] = str(benv.run_dir)
    ph = Phases(benv, cfg)
    if args.profile is not None:
        out = Path(args.profile) / temporal if args.temporal == "both" else Path(args.profile)
        ph.profiler = Profiler(out.resolve(), benv, args.profile_rate)
    rc = 0
    try:
        benv.up()
        results["machine"]["loadavg_start"] = machine_info()["loadavg"]
        asyncio.run(run_phases(ph, results))
    except KeyboardInterrupt:
        ph.errors.append("interrupted")
        rc = 130
    except Exception as exc:
        traceback.print_exc()
        ph.errors.append(f"{type(exc).__name__}: {exc}"[:500])
        rc = 1
    finally:
        results["machine"]["loadavg_end"] = machine_info()["loadavg"]
        progress("stopping the environment")
        try:
            benv.down(keep_dir=args.keep_run_dir or rc != 0)
        except Exception as exc:
            ph.errors.append(f"stopping the environment: {exc}"[:500])
    results["runtime_s"] = round(time.monotonic() - t0, 1)
    results["errors"] = ph.errors
    results["targets"] = evaluate(results)
    path = write_json(results, RESULTS[(args.temporal, temporal)])
    print(render_table(results))
    print(f"figures written to {path.relative_to(LATEST.parents[2])}")
    if rc != 0 and benv.owned_dir:
        print(f"run folder kept for its logs: {benv.run_dir}", file=sys.stderr)
    return rc, path


# Where each run's figures go, by (--temporal, the run's Temporal): a dev-server run
# alone is the README's main table; `both` writes the pair the side-by-side table shows.
RESULTS = {
    ("dev", "dev"): LATEST,
    ("server", "server"): PAIR_SERVER,
    ("both", "dev"): PAIR_DEV,
    ("both", "server"): PAIR_SERVER,
}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    cfg = settings(args)
    modes = ("dev", "server") if args.temporal == "both" else (args.temporal,)
    rc = 0
    for temporal in modes:
        progress(f"run with the Temporal {'dev server' if temporal == 'dev' else 'server'}")
        code, _ = run_once(args, cfg, temporal)
        rc = rc or code
        if code == 130:
            break
    write_readme_table([])
    return rc


if __name__ == "__main__":
    sys.exit(main())
