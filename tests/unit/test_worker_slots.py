"""Workflow task slots: few enough that a busy worker finishes what it takes within the
workflow task timeout (tasks beyond wait on the server, where no timeout runs)."""

from __future__ import annotations

from pathlib import Path

import yaml

from nicotask.settings import Settings

CHART_VALUES = Path(__file__).resolve().parents[2] / "charts" / "nicotask" / "values.yaml"


def test_default_workflow_task_slots_are_few_and_the_chart_agrees() -> None:
    default = Settings().worker_max_concurrent_workflows
    assert default == 20
    values = yaml.safe_load(CHART_VALUES.read_text())
    assert values["worker"]["maxConcurrentWorkflows"] == default
