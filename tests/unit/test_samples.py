"""samples/ makes a demo you can cancel, in any namespace.

(The API server accepting them with `kubectl apply -n X -f samples/` is
tests/integration/test_crds.py; the printed commands cancelling the Running
sample task is tests/e2e/test_make_run_usage.py.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from nicotask import api
from nicotask.api import ActionType, ComponentType

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
BMC_CREDENTIALS_LABEL = "nico.dev/bmc-credentials"


def _docs(folder: Path) -> list[dict[str, Any]]:
    return [
        d for p in sorted(folder.glob("*.yaml")) for d in yaml.safe_load_all(p.read_text()) if d
    ]


def test_no_sample_names_a_namespace() -> None:
    docs = _docs(SAMPLES) + _docs(SAMPLES / "invalid")
    assert len(docs) > 10
    assert [d["metadata"]["name"] for d in docs if "namespace" in d["metadata"]] == []


def test_every_sample_secret_is_opted_in_as_bmc_credentials() -> None:
    secrets = [d for d in _docs(SAMPLES) if d["kind"] == "Secret"]
    assert secrets
    for secret in secrets:
        assert secret["metadata"].get("labels", {}).get(BMC_CREDENTIALS_LABEL) == "true"


def _sample_rule() -> api.NicoOperationRuleSpec:
    (doc,) = [d for d in _docs(SAMPLES) if d["kind"] == "NicoOperationRule"]
    return api.NicoOperationRule.model_validate(doc).spec


def test_the_sample_task_runs_at_least_two_minutes_even_with_the_bmcs_on() -> None:
    rule = _sample_rule()
    assert rule.operation == api.Operation.POWER_ON and rule.default
    # With every BMC already on, power actions return at once: only the waits count.
    # A stage lasts as long as its longest step; stages run one after another.
    waits = [
        max((s.action.duration_seconds or 0.0) for s in steps if s.action.type == ActionType.SLEEP)
        for steps in rule.stages().values()
        if any(s.action.type == ActionType.SLEEP for s in steps)
    ]
    assert sum(waits) >= 120, waits


def test_the_sample_rule_powers_every_tier_in_order() -> None:
    rule = _sample_rule()
    power_on = [
        (stage, s.component_type)
        for stage, steps in rule.stages().items()
        for s in steps
        if s.action.type == ActionType.POWER_CONTROL
    ]
    assert [t for _, t in power_on] == [
        ComponentType.POWER_SHELF,
        ComponentType.NVSWITCH,
        ComponentType.COMPUTE,
    ]
    # the settle waits sit between the tiers, not after the last one
    sleeps = [
        stage
        for stage, steps in rule.stages().items()
        for s in steps
        if s.action.type == ActionType.SLEEP
    ]
    assert all(power_on[0][0] < st < power_on[-1][0] for st in sleeps), sleeps
