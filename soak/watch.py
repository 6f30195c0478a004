"""The API server's witness: one watch on the soak's NicoTasks (the bench's TaskWatch),
keeping each task's observed history and checking the cheap invariants as events come."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from bench.watch import TERMINAL, TaskWatch


@dataclass
class Seen:
    t: float  # time.monotonic()
    status: str
    seq: int | None
    rv: str


@dataclass
class History:
    uid: str = ""
    events: list[Seen] = field(default_factory=list)
    max_seq: int = -1
    terminal: str | None = None
    terminal_t: float | None = None
    last: dict[str, Any] = field(default_factory=dict)


class SoakWatch(TaskWatch):
    """TaskWatch plus, per task: every (status, reportSequence) seen, and violations of
    "reportSequence never goes down" and "a terminal status is final"."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.history: dict[str, History] = {}
        self.violations: list[dict[str, Any]] = []

    def _record(self, obj: dict[str, Any], now: float) -> None:
        super()._record(obj, now)
        meta = obj.get("metadata") or {}
        name = meta.get("name")
        if not name:
            return
        st = obj.get("status") or {}
        h = self.history.setdefault(name, History())
        h.uid = meta.get("uid") or h.uid
        h.last = obj
        status = str(st.get("status") or "")
        seq = st.get("reportSequence")
        rv = str(meta.get("resourceVersion") or "")
        if h.events and h.events[-1].rv == rv:
            return  # the same version again (a re-list)
        h.events.append(Seen(now, status, seq, rv))
        if len(h.events) > 200:
            del h.events[:100]
        if isinstance(seq, int):
            if seq < h.max_seq:
                self.violations.append(
                    {
                        "invariant": "report_sequence_monotonic",
                        "task": name,
                        "uid": h.uid,
                        "detail": f"reportSequence {seq} after {h.max_seq} (rv {rv})",
                        "t": time.time(),
                    }
                )
            h.max_seq = max(h.max_seq, seq)
        if h.terminal and status != h.terminal:
            self.violations.append(
                {
                    "invariant": "terminal_is_final",
                    "task": name,
                    "uid": h.uid,
                    "detail": f"status {status!r} after terminal {h.terminal!r} (rv {rv})",
                    "t": time.time(),
                }
            )
        if status in TERMINAL and not h.terminal:
            h.terminal, h.terminal_t = status, now

    def timeline(self, name: str, t0: float) -> list[str]:
        h = self.history.get(name)
        if h is None:
            return []
        return [f"+{e.t - t0:.2f}s {e.status or '-'} seq={e.seq} rv={e.rv}" for e in h.events]
