"""Pure measurement helpers: percentiles, summaries, a clock, process RSS."""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation between closest ranks.

    Same definition as numpy's default ("linear"); NaN for an empty sequence.
    """
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be within 0..100, got {q}")
    data = sorted(values)
    if not data:
        return math.nan
    if len(data) == 1:
        return float(data[0])
    pos = (len(data) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = math.ceil(pos)
    if lo == hi:
        return float(data[lo])
    return float(data[lo] + (data[hi] - data[lo]) * (pos - lo))


def summarize(values: Iterable[float], scale: float = 1.0) -> dict[str, Any]:
    """n, min, mean, p50, p95, p99, max of `values` (each multiplied by `scale`).

    Figures are rounded to 3 decimals; an empty input gives n=0 and None figures.
    """
    data = [v * scale for v in values]
    if not data:
        empty: dict[str, Any] = {"n": 0}
        empty.update({k: None for k in ("min", "mean", "p50", "p95", "p99", "max")})
        return empty
    return {
        "n": len(data),
        "min": round(min(data), 3),
        "mean": round(sum(data) / len(data), 3),
        "p50": round(percentile(data, 50), 3),
        "p95": round(percentile(data, 95), 3),
        "p99": round(percentile(data, 99), 3),
        "max": round(max(data), 3),
    }


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """numerator / denominator rounded to 2 decimals; None when either is missing or 0."""
    if numerator is None or denominator is None or denominator == 0:
        return None
    if math.isnan(numerator) or math.isnan(denominator):
        return None
    return round(numerator / denominator, 2)


def rate(count: int, seconds: float | None) -> float | None:
    """count / seconds rounded to 1 decimal; None when seconds is missing or not positive."""
    if seconds is None or seconds <= 0:
        return None
    return round(count / seconds, 1)


def parse_status_kb(text: str, key: str) -> int | None:
    """The value in kB of `key` (e.g. VmRSS) in the text of /proc/<pid>/status."""
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        if name.strip() == key:
            parts = rest.split()
            if parts and parts[0].isdigit():
                return int(parts[0])
    return None


def proc_status_kb(pid: int, key: str = "VmRSS") -> int | None:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    return parse_status_kb(text, key)


def _pgrp(pid: int) -> int | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    return int(fields[2])


def _cmdline(pid: int) -> str:
    try:
        return (
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
    except OSError:
        return ""


def python_pid_in_group(pid: int) -> int:
    """The python process doing the work for a recorded process `pid`.

    `pid` itself when it runs python; otherwise the python process with the
    largest RSS in its process group (the recorded process may be a wrapper).
    """
    if "python" in _cmdline(pid).split(" ")[0]:
        return pid
    best, best_rss = pid, -1
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        other = int(entry)
        if _pgrp(other) != pid or "python" not in _cmdline(other):
            continue
        rss = proc_status_kb(other) or 0
        if rss > best_rss:
            best, best_rss = other, rss
    return best


def cpu_ticks(pid: int) -> int | None:
    """utime + stime of `pid` in clock ticks, None when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    return int(fields[11]) + int(fields[12])


def metric_sum(text: str, name: str) -> int:
    """The sum over all label sets of the Prometheus metric `name` in exposition `text`."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        metric, _, value = line.rpartition(" ")
        if metric == name or metric.startswith(name + "{"):
            try:
                total += float(value)
            except ValueError:
                continue
    return int(total)
