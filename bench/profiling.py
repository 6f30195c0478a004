"""`python -m bench --profile DIR`: where a start's and a burst cancel's CPU goes.

For the start phase and the burst-cancel phase, each on its own (bench/README.md):
- py-spy records the operator, the worker and the shim (`--format raw`, full file
  names, no line numbers, thread ids, `--nonblocking`: the processes are not
  paused) into DIR/<phase>-<process>.txt, collapsed stacks that flamegraph.pl or
  speedscope read too;
- each of their threads' CPU from /proc, so the summary tells the Python threads
  (what py-spy sees) from the native ones (the Temporal SDK's Rust core);
- kube-apiserver's CPU profile, /debug/pprof/profile in chunks of CHUNK_S seconds
  with the admin certificate (the bench starts it with `--profiling` for this),
  merged into DIR/<phase>-kube-apiserver.pprof (`go tool pprof`);
- kube-apiserver's watch counters: watches open, watch events and bytes sent per task;
- the phase's CPU ms per task and the threads' ticks: DIR/<phase>.json.
At the end of the run DIR/summary.txt says, per phase and process, the CPU ms per
task and its shares by package, by our function and by function (profsummary.py);
`python -m bench.profiling DIR` writes it again from the files.

Sampling costs CPU on the same cores: take the rates and CPU per task of a run
without --profile; a profile gives proportions. py-spy runs with `--gil`: only the
thread holding the GIL is sampled, so a thread woken but waiting for a core (a
loaded machine's run queue) is not counted as running Python.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from nicotask_dev.devenv import gobuild
from nicotask_dev.devenv.kube import admin_ssl_context

from . import profsummary as ps
from .env import BenchEnv, progress
from .measure import python_pid_in_group
from .promtext import counter_delta, counter_samples

PYTHON_PROCESSES = ("operator", "worker", "shim")
# kube-apiserver profiles this long, back to back, while a phase runs: the last one runs
# on past the phase's end by less than this, before the bench's next /metrics scrape.
CHUNK_S = 2
DEFAULT_RATE = 100
WATCHERS = "apiserver_longrunning_requests"
WATCH_EVENTS = "apiserver_watch_events_total"
WATCH_BYTES = "apiserver_watch_events_sizes_sum"
ThreadTicks = dict[int, tuple[str, int]]  # tid -> (comm, utime + stime)


def thread_ticks(pid: int, proc: Path = Path("/proc")) -> ThreadTicks:
    """Every thread of `pid`: its name and CPU ticks (user + system)."""
    out: ThreadTicks = {}
    with contextlib.suppress(OSError):
        for entry in os.listdir(proc / str(pid) / "task"):
            try:
                text = (proc / str(pid) / "task" / entry / "stat").read_text()
            except OSError:
                continue
            comm = text[text.index("(") + 1 : text.rindex(")")]
            f = text[text.rindex(")") + 2 :].split()
            out[int(entry)] = (comm, int(f[11]) + int(f[12]))
    return out


def thread_split(
    before: ThreadTicks, after: ThreadTicks, python_tids: set[int]
) -> tuple[int, dict[str, tuple[int, int]]]:
    """Ticks of the Python threads (py-spy saw them) in the window, and of the others by
    name: name -> (threads, ticks)."""
    python = 0
    native: dict[str, tuple[int, int]] = {}
    for tid, (comm, t) in after.items():
        used = t - before.get(tid, (comm, 0))[1]
        if tid in python_tids:
            python += used
        elif used > 0:
            n, ticks = native.get(comm, (0, 0))
            native[comm] = (n + 1, ticks + used)
    return python, native


@dataclass
class Recording:
    phase: str
    pids: dict[str, int]
    threads_before: dict[str, ThreadTicks]
    spies: dict[str, tuple[asyncio.subprocess.Process, Path]]
    pprof: asyncio.Task[list[Path]] | None
    stop: asyncio.Event
    watch_before: dict[str, Any] | None
    meta: dict[str, Any] = field(default_factory=dict)


def _samples_json(samples: dict[Any, float]) -> list[Any]:
    return [[dict(labels), v] for labels, v in samples.items()]


class Profiler:
    def __init__(self, out: Path, benv: BenchEnv, rate: int = DEFAULT_RATE) -> None:
        self.out = out
        self.benv = benv
        self.rate = rate
        self.done: list[Recording] = []
        self.current: Recording | None = None
        self.py_spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or "py-spy"
        out.mkdir(parents=True, exist_ok=True)

    # ---- recording -------------------------------------------------------------

    async def begin(self, phase: str) -> None:
        roots = self.benv.process_roots()
        pids = {n: python_pid_in_group(roots[n]) for n in PYTHON_PROCESSES if n in roots}
        watch_before = await self._watch_counters()  # before the pprof: a scrape is dear
        spies = {}
        for name, pid in pids.items():
            path = self.out / f"{phase}-{name}.txt"
            log = (self.out / f"{phase}-{name}.py-spy.log").open("wb")
            proc = await asyncio.create_subprocess_exec(
                self.py_spy, "record", "--pid", str(pid), "--format", "raw",
                "--rate", str(self.rate), "--nonblocking", "--gil", "--full-filenames",
                "--nolineno", "--threads", "--output", str(path),
                stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
            log.close()
            spies[name] = (proc, path)
        stop = asyncio.Event()
        pprof = asyncio.create_task(self._pprof_chunks(phase, stop)) if self._api_url else None
        self.current = Recording(
            phase=phase,
            pids=pids,
            threads_before={n: thread_ticks(p) for n, p in pids.items()},
            spies=spies,
            pprof=pprof,
            stop=stop,
            watch_before=watch_before,
        )
        progress(f"profile: recording {', '.join(pids)} and kube-apiserver during {phase}")

    async def end(self, tasks: int, cpu_ms: dict[str, float | None]) -> None:
        rec, self.current = self.current, None
        if rec is None:
            return
        threads_after = {n: thread_ticks(p) for n, p in rec.pids.items()}
        rec.stop.set()
        for proc, _ in rec.spies.values():
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGINT)  # py-spy writes its file and exits
        for name, (proc, _) in rec.spies.items():
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except TimeoutError:
                progress(f"profile: py-spy of {name} did not stop; killed")
                proc.kill()
        pprofs = await rec.pprof if rec.pprof is not None else []
        watch_after = await self._watch_counters()
        rec.meta = {
            "phase": rec.phase,
            "tasks": tasks,
            "cpu_ms": cpu_ms,
            "rate": self.rate,
            "clock_ticks": os.sysconf("SC_CLK_TCK"),
            "threads": {
                n: {"before": rec.threads_before[n], "after": threads_after.get(n, {})}
                for n in rec.pids
            },
            "pprof_chunks": [p.name for p in pprofs],
            "watch": None,
        }
        if rec.watch_before and watch_after:
            rec.meta["watch"] = {
                k: {
                    "before": _samples_json(rec.watch_before[k]),
                    "after": _samples_json(watch_after[k]),
                }
                for k in ("watchers", "events", "bytes")
            }
        (self.out / f"{rec.phase}.json").write_text(json.dumps(rec.meta, indent=1))
        self.done.append(rec)

    @property
    def _api_url(self) -> str | None:
        url = self.benv.state.get("api_url")
        return None if not url or "kube" in self.benv.state.get("external", []) else str(url)

    async def _pprof_chunks(self, phase: str, stop: asyncio.Event) -> list[Path]:
        """CPU profiles of kube-apiserver, CHUNK_S seconds each, until `stop`."""
        paths: list[Path] = []
        ctx = admin_ssl_context(self.benv.env.pki)
        url = f"{self._api_url}/debug/pprof/profile?seconds={CHUNK_S}"
        async with httpx.AsyncClient(timeout=CHUNK_S + 30, verify=ctx) as http:
            while not stop.is_set():
                try:
                    resp = await http.get(url)
                    resp.raise_for_status()
                except httpx.HTTPError as exc:
                    progress(f"profile: kube-apiserver pprof: {type(exc).__name__}: {exc}")
                    break
                path = self.out / f"{phase}-kube-apiserver-{len(paths)}.pprof"
                path.write_bytes(resp.content)
                paths.append(path)
        return paths

    async def _watch_counters(self) -> dict[str, Any] | None:
        text = await self.benv.apiserver_metrics()
        if text is None:
            return None
        return {
            "watchers": counter_samples(text, WATCHERS),
            "events": counter_samples(text, WATCH_EVENTS),
            "bytes": counter_samples(text, WATCH_BYTES),
        }

    async def close(self) -> Path:
        """DIR/summary.txt (go tool pprof runs here, after the phases). A phase cut short
        between begin and end has its recording ended here, without CPU figures."""
        if self.current is not None:
            await self.end(0, {})
        path = await asyncio.to_thread(write_summary, self.out)
        progress(f"profile: summary in {path}")
        return path


# ---- the summary, from the files -------------------------------------------------------


def write_summary(out: Path) -> Path:
    """DIR/summary.txt from DIR/<phase>.json and the profiles next to it."""
    lines = [
        "Where a start's and a burst cancel's CPU goes (python -m bench --profile).",
        "CPU ms per task: from /proc over the phase's window (the sampling's own cost in it);",
        "shares: py-spy (--gil) on the Python processes, pprof on kube-apiserver.",
        "",
    ]
    for phase in ("start", "cancel"):
        meta_path = out / f"{phase}.json"
        if meta_path.exists():
            lines += _phase_lines(out, json.loads(meta_path.read_text()))
    path = out / "summary.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def _phase_lines(out: Path, meta: dict[str, Any]) -> list[str]:
    phase, tasks, cpu_ms = meta["phase"], meta["tasks"], meta["cpu_ms"]
    cpu = ", ".join(f"{k} {v}" for k, v in cpu_ms.items() if v is not None)
    lines = [f"== {phase}: {tasks} tasks; CPU ms per task: {cpu}", ""]
    per_task = 1000 / meta["clock_ticks"] / max(1, tasks)
    for name, ticks in meta["threads"].items():
        path = out / f"{phase}-{name}.txt"
        try:
            stacks = ps.parse_collapsed(path.read_text())
        except OSError:
            lines += [f"-- {name}: no py-spy output ({path.name})", ""]
            continue

        def threads(d: dict[str, Any]) -> ThreadTicks:
            return {int(tid): (comm, t) for tid, (comm, t) in d.items()}

        py_ticks, native = thread_split(
            threads(ticks["before"]), threads(ticks["after"]), stacks.threads
        )
        py_ms = py_ticks * per_task
        others = "; ".join(
            f"{comm} x{n} {t * per_task:.1f} ms" for comm, (n, t) in sorted(native.items())
        )
        lines.append(
            f"-- {name}: {cpu_ms.get(name)} ms per task; Python threads {py_ms:.1f} ms"
            f" ({len(stacks.threads)} sampled), other threads: {others or '-'};"
            f" {stacks.total} samples ({path.name})"
        )
        lines += _py_lines(ps.summarize_stacks(stacks), py_ms)
    lines += _apiserver_lines(out, meta)
    return lines


def _py_lines(s: ps.PySummary, py_ms: float) -> list[str]:
    def block(title: str, rows: list[tuple[str, float]]) -> list[str]:
        return [
            f"   {title}:",
            *(f"     {pct:5.1f}% {pct * py_ms / 100:5.2f} ms  {k}" for k, pct in rows),
        ]

    return [
        *block("self, by package", s.self_by_package),
        *block("by our innermost function (the library work below it included)", s.by_our_caller),
        *block("self, by function", s.self_by_function),
        *block("total, by function (below the event loop)", s.total_by_function),
        "",
    ]


def _pprof(*args: str) -> bytes:
    run = subprocess.run(
        [gobuild.go_command(), "tool", "pprof", *args],
        capture_output=True,
        env={**os.environ, "GOTOOLCHAIN": "local"},
        check=False,
    )
    if run.returncode != 0:
        raise RuntimeError(run.stderr.decode(errors="replace").strip()[-500:])
    return run.stdout


def _apiserver_lines(out: Path, meta: dict[str, Any]) -> list[str]:
    phase = meta["phase"]
    ms = meta["cpu_ms"].get("kube-apiserver") or 0.0
    lines = [f"-- kube-apiserver: {ms} ms per task", *_watch_lines(meta)]
    merged = out / f"{phase}-kube-apiserver.pprof"
    chunks = [out / name for name in meta.get("pprof_chunks", []) if (out / name).exists()]
    try:
        if chunks:
            merged.write_bytes(_pprof("-proto", *map(str, chunks)))
            for chunk in chunks:
                chunk.unlink()
        if not merged.exists():
            return [*lines, "   (no pprof profile)", ""]
        for flags, suffix in ((("-top",), "top"), (("-top", "-cum"), "cum")):
            text = _pprof(*flags, "-nodecount=80", str(merged))
            (out / f"{phase}-kube-apiserver-{suffix}.txt").write_bytes(text)
        traces = ps.parse_traces(_pprof("-traces", str(merged)).decode())
    except (RuntimeError, OSError) as exc:
        return [*lines, f"   go tool pprof failed: {exc}", ""]
    total, left_out, activities, kinds = ps.apiserver_shares(traces)
    lines.append(
        f"   {total / 1000:.1f} s of CPU sampled ({merged.name}; -top, -cum: *.txt), of which"
        f" {left_out / 1000:.1f} s the bench's /metrics scrapes and the profiler, left out;"
        " the rest in ms per task:"
    )
    lines.append("   by activity:")
    lines += [f"     {p:5.1f}% {p * ms / 100:5.2f} ms  {k}" for k, p in activities]
    lines.append("   by kind of code (the innermost frame of a known kind):")
    lines += [f"     {p:5.1f}% {p * ms / 100:5.2f} ms  {k}" for k, p in kinds]
    return [*lines, ""]


def _watch_lines(meta: dict[str, Any]) -> list[str]:
    watch = meta.get("watch")
    if not watch:
        return []

    def samples(rows: list[Any]) -> dict[Any, float]:
        return {tuple(sorted(labels.items())): v for labels, v in rows}

    def by_resource(s: dict[Any, float]) -> dict[str, float]:
        out: dict[str, float] = {}
        for labels, v in s.items():
            d = dict(labels)
            name = d.get("resource") or d.get("kind") or "?"
            out[name] = out.get(name, 0.0) + v
        return out

    open_now = {
        k: v
        for k, v in by_resource(
            {
                lb: v
                for lb, v in samples(watch["watchers"]["after"]).items()
                if dict(lb).get("verb") == "WATCH"
            }
        ).items()
        if v and k.startswith("nico")
    }
    n = max(1, meta["tasks"])
    events = by_resource(
        counter_delta(samples(watch["events"]["before"]), samples(watch["events"]["after"]))
    )
    sizes = by_resource(
        counter_delta(samples(watch["bytes"]["before"]), samples(watch["bytes"]["after"]))
    )
    busy = sorted(((k, v) for k, v in events.items() if v / n >= 0.05), key=lambda kv: -kv[1])
    return [
        "   watches open: " + ", ".join(f"{k} {v:.0f}" for k, v in sorted(open_now.items())),
        "   watch events sent per task: "
        + ", ".join(f"{k} {v / n:.2f} ({sizes.get(k, 0) / n / 1024:.1f} KiB)" for k, v in busy),
    ]


def main(argv: list[str] | None = None) -> int:
    """`python -m bench.profiling DIR`: DIR/summary.txt again from the recorded files."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m bench.profiling DIR", file=sys.stderr)
        return 2
    print(write_summary(Path(args[0])).read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
