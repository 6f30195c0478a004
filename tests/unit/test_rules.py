"""Rule resolution: pinned > rack > default > built-in; built-in rules' shapes."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest

from nicotask.api import (
    ActionType,
    ComponentType,
    NicoOperationRule,
    NicoRack,
    NicoTaskSpec,
    Operation,
    PowerAction,
    PowerState,
)
from nicotask.rules import (
    BUILTIN_RULE_NAMESPACE,
    ResolvedRule,
    RuleNotFound,
    builtin_rule,
    builtin_rule_id,
    resolve_rule,
)

SITE = "660e8400-e29b-41d4-a716-446655440000"
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def rule(
    operation: Operation,
    *,
    rule_id: str | None = None,
    default: bool = False,
    name: str | None = None,
    created: dt.datetime | None = T0,
) -> NicoOperationRule:
    rid = rule_id or str(uuid.uuid4())
    meta: dict[str, Any] = {"name": name or f"rule-{rid[:8]}", "namespace": "ns"}
    if created is not None:
        meta["creationTimestamp"] = created.isoformat()
    return NicoOperationRule.model_validate(
        {
            "metadata": meta,
            "spec": {
                "ruleId": rid,
                "operation": operation.value,
                "default": default,
                "steps": [
                    {
                        "componentType": "Compute",
                        "stage": 1,
                        "action": {"type": "Sleep", "durationSeconds": 1},
                    }
                ],
            },
        }
    )


def rack(rules: dict[Operation, str] | None = None) -> NicoRack:
    return NicoRack.model_validate(
        {
            "metadata": {"name": "rack-1", "namespace": "ns"},
            "spec": {
                "siteId": SITE,
                "credentials": {"name": "bmc"},
                "rules": [
                    {"operation": op.value, "ruleId": rid} for op, rid in (rules or {}).items()
                ],
            },
        }
    )


def task(operation: Operation = Operation.POWER_ON, rule_id: str | None = None) -> NicoTaskSpec:
    return NicoTaskSpec(site_id=SITE, rack_ref="rack-1", operation=operation, rule_id=rule_id)


# ---- resolution order --------------------------------------------------------


def test_pinned_rule_wins_over_everything() -> None:
    pinned = rule(Operation.POWER_ON)
    on_rack = rule(Operation.POWER_ON)
    default = rule(Operation.POWER_ON, default=True)
    got = resolve_rule(
        task(rule_id=pinned.spec.rule_id),
        rack({Operation.POWER_ON: on_rack.spec.rule_id}),
        [default, on_rack, pinned],
    )
    assert got == ResolvedRule(pinned.spec.rule_id, pinned.spec, "pinned")


def test_rack_rule_wins_over_default() -> None:
    on_rack = rule(Operation.POWER_ON)
    default = rule(Operation.POWER_ON, default=True)
    got = resolve_rule(task(), rack({Operation.POWER_ON: on_rack.spec.rule_id}), [default, on_rack])
    assert got.source == "rack"
    assert got.spec == on_rack.spec


def test_rack_rule_for_another_operation_is_ignored() -> None:
    off_rule = rule(Operation.POWER_OFF)
    default = rule(Operation.POWER_ON, default=True)
    got = resolve_rule(
        task(), rack({Operation.POWER_OFF: off_rule.spec.rule_id}), [off_rule, default]
    )
    assert got.source == "default"
    assert got.rule_id == default.spec.rule_id


def test_default_rule_of_the_operation() -> None:
    default_off = rule(Operation.POWER_OFF, default=True)
    default_on = rule(Operation.POWER_ON, default=True)
    not_default = rule(Operation.POWER_ON)
    got = resolve_rule(task(), rack(), [default_off, not_default, default_on])
    assert got == ResolvedRule(default_on.spec.rule_id, default_on.spec, "default")


def test_two_defaults_oldest_then_name_wins() -> None:
    newer = rule(Operation.POWER_ON, default=True, name="a", created=T0 + dt.timedelta(hours=1))
    older_b = rule(Operation.POWER_ON, default=True, name="b", created=T0)
    older_c = rule(Operation.POWER_ON, default=True, name="c", created=T0)
    for order in ([newer, older_b, older_c], [older_c, newer, older_b], [older_b, older_c, newer]):
        assert resolve_rule(task(), rack(), order).rule_id == older_b.spec.rule_id


def test_default_without_timestamp_sorts_last() -> None:
    undated = rule(Operation.POWER_ON, default=True, name="a", created=None)
    dated = rule(Operation.POWER_ON, default=True, name="z", created=T0)
    assert resolve_rule(task(), rack(), [undated, dated]).rule_id == dated.spec.rule_id


def test_builtin_when_nothing_else() -> None:
    got = resolve_rule(task(Operation.POWER_OFF), rack(), [rule(Operation.POWER_ON, default=True)])
    assert got.source == "builtin"
    assert got.rule_id == builtin_rule_id(Operation.POWER_OFF)
    assert got.spec == builtin_rule(Operation.POWER_OFF)


def test_no_rack_still_resolves() -> None:
    assert resolve_rule(task(), None, []).source == "builtin"


def test_rule_id_match_is_case_insensitive() -> None:
    pinned = rule(Operation.POWER_ON)
    got = resolve_rule(task(rule_id=pinned.spec.rule_id.upper()), rack(), [pinned])
    assert got.source == "pinned"


# ---- errors ----------------------------------------------------------------------


def test_pinned_unknown_rule_raises() -> None:
    missing = str(uuid.uuid4())
    with pytest.raises(RuleNotFound, match=f"spec.ruleId {missing} matches no NicoOperationRule"):
        resolve_rule(task(rule_id=missing), rack(), [rule(Operation.POWER_ON, default=True)])


def test_pinned_rule_of_another_operation_raises() -> None:
    off_rule = rule(Operation.POWER_OFF)
    with pytest.raises(RuleNotFound, match="is a rule for PowerOff, not for PowerOn"):
        resolve_rule(task(rule_id=off_rule.spec.rule_id), rack(), [off_rule])


def test_rack_rule_unknown_raises() -> None:
    missing = str(uuid.uuid4())
    with pytest.raises(RuleNotFound, match=f"ruleId {missing} of rack rack-1 for PowerOn"):
        resolve_rule(task(), rack({Operation.POWER_ON: missing}), [])


def test_pinning_a_builtin_rule() -> None:
    rid = builtin_rule_id(Operation.POWER_CYCLE)
    got = resolve_rule(task(Operation.POWER_CYCLE, rule_id=rid), rack(), [])
    assert got.source == "pinned"
    assert got.spec == builtin_rule(Operation.POWER_CYCLE)
    with pytest.raises(RuleNotFound, match="built-in rule for PowerCycle, not for PowerOn"):
        resolve_rule(task(Operation.POWER_ON, rule_id=rid), rack(), [])


# ---- built-in rules ----------------------------------------------------------------


def shape(op: Operation) -> list[tuple[int, ComponentType, PowerAction | None, PowerState | None]]:
    spec = builtin_rule(op)
    return [
        (s.stage, s.component_type, s.action.power, s.action.expected_state) for s in spec.steps
    ]


PS, NV, CO = ComponentType.POWER_SHELF, ComponentType.NVSWITCH, ComponentType.COMPUTE
ON, OFF = PowerState.ON, PowerState.OFF


def test_builtin_power_on() -> None:
    assert shape(Operation.POWER_ON) == [
        (1, PS, PowerAction.ON, ON),
        (2, NV, PowerAction.ON, ON),
        (3, CO, PowerAction.ON, ON),
    ]


def test_builtin_power_off_and_force_off() -> None:
    g = PowerAction.GRACEFUL_SHUTDOWN
    assert shape(Operation.POWER_OFF) == [(1, CO, g, OFF), (2, NV, g, OFF), (3, PS, g, OFF)]
    f = PowerAction.FORCE_OFF
    assert shape(Operation.FORCE_OFF) == [(1, CO, f, OFF), (2, NV, f, OFF), (3, PS, f, OFF)]


def test_builtin_cycles_are_off_then_on() -> None:
    g, f, on = PowerAction.GRACEFUL_SHUTDOWN, PowerAction.FORCE_OFF, PowerAction.ON
    assert shape(Operation.POWER_CYCLE) == [
        (1, CO, g, OFF), (2, NV, g, OFF), (3, PS, g, OFF),
        (4, PS, on, ON), (5, NV, on, ON), (6, CO, on, ON),
    ]  # fmt: skip
    assert shape(Operation.FORCE_CYCLE) == [
        (1, CO, f, OFF), (2, NV, f, OFF), (3, PS, f, OFF),
        (4, PS, on, ON), (5, NV, on, ON), (6, CO, on, ON),
    ]  # fmt: skip


def test_builtin_defaults_match_upstream() -> None:
    for op in Operation:
        spec = builtin_rule(op)
        assert spec.operation == op
        assert spec.default is True
        assert spec.workflow_timeout_seconds == 3600
        for step in spec.steps:
            assert step.action.type == ActionType.POWER_CONTROL
            assert step.timeout_seconds == 1200
            assert step.max_parallel == 0
            assert step.retry.max_attempts == 3
            assert step.retry.initial_interval_seconds == 1
            assert step.retry.backoff_coefficient == 2
            assert step.retry.max_interval_seconds == 60


def test_builtin_rule_ids_are_stable_distinct_uuids() -> None:
    ids = {op: builtin_rule_id(op) for op in Operation}
    assert len(set(ids.values())) == len(ids)
    for op, rid in ids.items():
        assert uuid.UUID(rid).version == 5
        assert rid == str(uuid.uuid5(BUILTIN_RULE_NAMESPACE, f"nicotask/builtin/{op.value}"))
        assert builtin_rule(op).rule_id == rid
