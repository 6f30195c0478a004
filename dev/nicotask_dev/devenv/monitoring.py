"""The chart's dashboard and alerts as data, for tests: their PromQL and the metric names
they use (every one must exist in some process's real /metrics output)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

CHART_FILES = Path(__file__).resolve().parents[3] / "charts" / "nicotask" / "files"
DASHBOARD = CHART_FILES / "dashboard.json"
ALERTS = CHART_FILES / "alerts.yaml"

# Our metrics and the Temporal SDK's; PromQL functions and label names never start so.
_METRIC = re.compile(r"\b((?:nicotask|temporal)_[a-zA-Z0-9_]+)")


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def dashboard_queries() -> list[str]:
    out = [t["expr"] for p in dashboard()["panels"] for t in p.get("targets", [])]
    for var in dashboard()["templating"]["list"]:
        if var.get("type") == "query":
            out.append(var["definition"])
    return out


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def alert_queries() -> list[str]:
    return [str(rule["expr"]) for rule in alert_rules()]


def metric_names(queries: list[str]) -> set[str]:
    return {m.group(1) for q in queries for m in _METRIC.finditer(q)}
