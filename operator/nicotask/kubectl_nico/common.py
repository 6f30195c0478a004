"""What every command shares: the error type, the statuses, --for and --timeout (pure)."""

from __future__ import annotations

import re
from typing import Any

from nicotask.api import FINISHED_STATUS_VALUES as FINISHED

STATUSES = ("Pending", "Waiting", "Running", *FINISHED)
# What kubectl prints before a task's name.
KIND = "nicotask.nico.dev"


class PluginError(Exception):
    """A clear message for the user; exit code 2."""


def task_status(task: dict[str, Any]) -> str:
    """status.status, `Pending` before the operator wrote any."""
    return str((task.get("status") or {}).get("status") or "Pending")


def normalize_for(value: str) -> str:
    """`finished` or a status name, case-insensitive (also `status=Terminated`)."""
    text = value.strip()
    if "=" in text:
        key, _, text = text.partition("=")
        if key.strip().lower() not in ("status", "jsonpath={.status.status}"):
            raise PluginError(f"--for: unknown condition {value!r}")
    lowered = text.strip().lower()
    if lowered in ("finished", "done", "terminal"):
        return "finished"
    for status in STATUSES:
        if status.lower() == lowered:
            return status
    raise PluginError(f"--for: expected finished or one of {', '.join(STATUSES)}; got {value!r}")


def wait_verdict(task: dict[str, Any], wanted: str) -> bool | None:
    """True: reached; False: can never be reached (finished otherwise); None: keep waiting."""
    current = (task.get("status") or {}).get("status")
    if wanted == "finished":
        return True if current in FINISHED else None
    if current == wanted:
        return True
    if current in FINISHED:
        return False
    return None


def parse_timeout(value: str) -> float:
    """`60s`, `5m`, `1h30m`, `90` (seconds), `0` for no wait."""
    text = value.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise PluginError(f"--timeout: cannot parse {value!r} (e.g. 30s, 5m, 1h)")
    scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    return sum(float(n) * scale[u] for n, u in parts)
