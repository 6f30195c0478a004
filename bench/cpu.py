"""CPU of the system's components from /proc: each recorded process and everything in
its session (the DevEnv starts every process in its own session, so wrappers and
their children are counted with it).

A sample is a snapshot of every process's utime+stime+cutime+cstime; the
children's times keep a child that exited and was reaped inside the tree
counted. A component's CPU over a window is the difference of the samples.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ProcStat:
    pid: int
    ppid: int
    session: int
    started: int  # clock ticks after boot: tells a recycled pid apart
    ticks: int  # utime + stime + cutime + cstime


def parse_stat(text: str) -> ProcStat:
    """The fields the bench needs from the text of /proc/<pid>/stat."""
    pid = int(text[: text.index("(")].strip())
    # the command (field 2) may hold spaces and parentheses: split after the last ')'
    f = text[text.rindex(")") + 2 :].split()
    # f[0] is field 3 (state): ppid 4, session 6, utime 14, stime 15, cutime 16,
    # cstime 17, starttime 22
    return ProcStat(
        pid=pid,
        ppid=int(f[1]),
        session=int(f[3]),
        started=int(f[19]),
        ticks=int(f[11]) + int(f[12]) + int(f[13]) + int(f[14]),
    )


def snapshot(proc: Path = Path("/proc")) -> dict[int, ProcStat]:
    """ProcStat of every process readable now."""
    out: dict[int, ProcStat] = {}
    for entry in os.listdir(proc):
        if not entry.isdigit():
            continue
        try:
            st = parse_stat((proc / entry / "stat").read_text())
        except (OSError, ValueError, IndexError):
            continue
        out[st.pid] = st
    return out


def tree_pids(stats: Mapping[int, ProcStat], root: int) -> set[int]:
    """`root`, the processes of its session, and their descendants."""
    if root not in stats:
        return set()
    members = {p for p, st in stats.items() if p == root or st.session == root}
    children: dict[int, list[int]] = {}
    for p, st in stats.items():
        children.setdefault(st.ppid, []).append(p)
    todo = list(members)
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in members:
                members.add(child)
                todo.append(child)
    return members


Key = tuple[int, int]  # (pid, start time)


def component_ticks(
    stats: Mapping[int, ProcStat], roots: Mapping[str, int]
) -> dict[str, dict[Key, tuple[int, int]]]:
    """Per component: (pid, start time) -> (ppid, ticks) of every process of its tree."""
    return {
        name: {
            (p, stats[p].started): (stats[p].ppid, stats[p].ticks) for p in tree_pids(stats, root)
        }
        for name, root in roots.items()
    }


def _window_ticks(
    before: Mapping[Key, tuple[int, int]], after: Mapping[Key, tuple[int, int]]
) -> int:
    """Ticks a process tree used between two samples.

    A process only in `after` started meanwhile: all its ticks count. A process
    only in `before` whose parent is still in the tree was reaped by it, so its
    whole lifetime is now in the parent's cutime/cstime: its ticks from before
    the window are taken off again. (A root that died, e.g. a restarted operator,
    is not subtracted: its successor counts from zero.)
    """
    alive = {pid for pid, _ in after}
    ticks = 0
    for key, (_, t) in after.items():
        prev = before.get(key)
        ticks += t - prev[1] if prev is not None and t >= prev[1] else t
    for key, (ppid, t) in before.items():
        if key not in after and ppid in alive:
            ticks -= t
    return max(0, ticks)


def cores_used(
    before: Mapping[str, Mapping[Key, tuple[int, int]]],
    after: Mapping[str, Mapping[Key, tuple[int, int]]],
    seconds: float,
    hz: int,
    components: Iterable[str] | None = None,
) -> dict[str, float | None]:
    """Cores each component used between two component_ticks samples, plus `total`.

    A component missing from either sample gives None (and is left out of the total).
    """
    names = list(components) if components is not None else sorted(set(before) | set(after))
    out: dict[str, float | None] = {}
    total = 0.0
    for name in names:
        a, b = before.get(name), after.get(name)
        if not a or not b or seconds <= 0:
            out[name] = None
            continue
        cores = _window_ticks(a, b) / hz / seconds
        out[name] = round(cores, 3)
        total += cores
    out["total"] = round(total, 3)
    return out


def clock_ticks_per_second() -> int:
    return int(os.sysconf("SC_CLK_TCK"))
