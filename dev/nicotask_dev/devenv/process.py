"""Spawn, wait for and stop background processes, tracked by PID.

Each process runs in its own session (so its process group id equals its PID
and a stop reaches its children too), writes stdout and stderr to one log
file, and is recorded with its start time so a recycled PID is never mistaken
for it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ReadyCheck = Callable[[], bool]


def venv_binary(name: str, missing: str) -> Path:
    """`name` next to this interpreter (the venv), else on PATH; `missing` says how to get it."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return beside
    found = shutil.which(name)
    if found:
        return Path(found)
    raise RuntimeError(missing)


def log(msg: str) -> None:
    print(f"[nicotask dev] {msg}", file=sys.stderr, flush=True)


@dataclass
class ProcessRecord:
    """What the state file keeps about one managed process."""

    name: str
    pid: int
    argv: list[str]
    log: str
    started: float  # kernel start time (clock ticks since boot), 0 if unknown
    url: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ProcessRecord:
        return cls(
            name=data["name"],
            pid=int(data["pid"]),
            argv=list(data.get("argv", [])),
            log=data.get("log", ""),
            started=float(data.get("started", 0)),
            url=data.get("url", ""),
            extra=dict(data.get("extra", {})),
        )


def _proc_stat(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may contain spaces; it is enclosed in parentheses
    return raw[raw.rindex(")") + 2 :].split()


def start_time(pid: int) -> float:
    """The kernel's start time of `pid`, or 0 when unknown (non-Linux)."""
    fields = _proc_stat(pid)
    return float(fields[19]) if fields else 0.0


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def pid_alive(pid: int, started: float = 0) -> bool:
    """True when `pid` runs and (if known) is the process that started at `started`."""
    if pid <= 0:
        return False
    _reap(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    fields = _proc_stat(pid)
    if fields is None:
        return not Path("/proc/self").exists()  # no procfs: trust kill(0)
    if fields[0] in ("Z", "X"):
        return False
    return not (started and float(fields[19]) != started)


def record_alive(rec: ProcessRecord) -> bool:
    return pid_alive(rec.pid, rec.started)


def spawn(
    name: str,
    argv: list[str],
    log_path: Path,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> tuple[subprocess.Popen[bytes], ProcessRecord]:
    """Start `argv` detached from our terminal, output appended to `log_path`."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as out:
        out.write(f"\n==== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(argv)}\n".encode())
        out.flush()
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
    rec = ProcessRecord(
        name=name, pid=proc.pid, argv=list(argv), log=str(log_path), started=start_time(proc.pid)
    )
    return proc, rec


def tail(path: str | Path, lines: int = 30) -> str:
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


class StartError(RuntimeError):
    """A managed process exited or did not get ready in time."""

    def __init__(self, message: str, *, port_taken: bool = False) -> None:
        super().__init__(message)
        # Read from the whole log: the tail may be a stack trace after the bind error.
        self.port_taken = port_taken or "in use" in message.lower()


def port_taken_in(path: str | Path) -> bool:
    try:
        return "address already in use" in Path(path).read_text(errors="replace").lower()
    except OSError:
        return False


def wait_ready(
    rec: ProcessRecord,
    check: ReadyCheck | None,
    timeout: float = 90.0,
    proc: subprocess.Popen[bytes] | None = None,
) -> float:
    """Poll `check` until it returns True; return the seconds it took.

    Raises StartError (with the tail of the log) if the process exits or the
    timeout passes. Prints progress every ten seconds.
    """
    t0 = time.monotonic()
    next_note = t0 + 10
    delay = 0.05
    while True:
        exited = proc.poll() is not None if proc is not None else not record_alive(rec)
        if exited:
            raise StartError(
                f"{rec.name} exited during startup; last lines of {rec.log}:\n{tail(rec.log)}",
                port_taken=port_taken_in(rec.log),
            )
        ok = False
        if check is None:
            ok = True
        else:
            with contextlib.suppress(Exception):
                ok = bool(check())
        if ok:
            return time.monotonic() - t0
        now = time.monotonic()
        if now - t0 > timeout:
            raise StartError(
                f"{rec.name} not ready after {timeout:.0f}s; last lines of {rec.log}:\n"
                f"{tail(rec.log)}"
            )
        if now >= next_note:
            log(f"  still waiting for {rec.name} ({now - t0:.0f}s)")
            next_note = now + 10
        time.sleep(delay)
        delay = min(delay * 1.5, 0.5)


def stop(rec: ProcessRecord, grace: float = 5.0) -> bool:
    """SIGTERM (or the record's `stop_signal`) to the process group, then SIGKILL after
    `grace` seconds.

    Returns True if the process was running.
    """
    if not record_alive(rec):
        return False

    def signal_group(sig: int) -> None:
        try:
            os.killpg(rec.pid, sig)
        except (ProcessLookupError, PermissionError):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(rec.pid, sig)

    signal_group(signal.Signals[rec.extra.get("stop_signal", "SIGTERM")])
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not record_alive(rec):
            break
        time.sleep(0.05)
    else:
        log(f"  {rec.name} (pid {rec.pid}) ignored SIGTERM for {grace:.0f}s, killing")
        signal_group(signal.SIGKILL)
        deadline = time.monotonic() + 5
        while record_alive(rec) and time.monotonic() < deadline:
            time.sleep(0.05)
    # stragglers left in the group (children that outlived their leader)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(rec.pid, signal.SIGKILL)
    return True
