"""One object the operator cannot parse never blocks the others: it is skipped, and said so."""

from __future__ import annotations

import logging

import pytest

from nicotask import api
from nicotask.operator.handlers import parse

RULE = {
    "apiVersion": api.API_VERSION,
    "kind": "NicoOperationRule",
    "metadata": {"name": "r", "namespace": "ns"},
    "spec": {
        "ruleId": "123e4567-e89b-12d3-a456-426614174000",
        "operation": "PowerOn",
        "steps": [
            {
                "componentType": "Compute",
                "stage": 1,
                "action": {"type": "Sleep", "durationSeconds": 1},
            }
        ],
    },
}


def test_a_valid_object_parses() -> None:
    rule = parse(api.NicoOperationRule, RULE, logging.getLogger("t"))  # type: ignore[arg-type]
    assert rule is not None and rule.spec.rule_id == RULE["spec"]["ruleId"]


def test_an_unparsable_object_is_skipped_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    # Stored before a stricter model (e.g. a ruleId without dashes, accepted by an
    # older CRD): the index leaves it out instead of failing every admission.
    bad = {**RULE, "spec": {**RULE["spec"], "ruleId": "123e4567e89b12d3a456426614174000"}}
    with caplog.at_level(logging.WARNING):
        assert parse(api.NicoOperationRule, bad, logging.getLogger("t")) is None  # type: ignore[arg-type]
    assert "skipped: not a valid NicoOperationRule" in caplog.text
