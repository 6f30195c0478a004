"""Rule resolution: which NicoOperationRule runs a task. Pure, no I/O.

Order (upstream NICo's, docs/upstream.md "Operation rules"):
1. the ruleId pinned on the task (spec.ruleId);
2. the rule the rack associates with the operation (rack spec.rules);
3. the NicoOperationRule marked `default: true` for the operation (when two
   claim it, the oldest by creationTimestamp, then by name, wins);
4. a built-in default: power on goes power shelves, then switches, then
   compute trays, one stage each; power off is the reverse; a cycle is the
   off stages followed by the on stages.

Built-in rules have a fixed ruleId (uuid5 of BUILTIN_RULE_NAMESPACE and the
operation name), so status.ruleId is always a UUID and a task may pin one.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from nicotask.api import (
    ActionType,
    ComponentType,
    NicoOperationRule,
    NicoOperationRuleSpec,
    NicoRack,
    NicoTaskSpec,
    Operation,
    PowerAction,
    PowerState,
    RetryPolicy,
    RuleStep,
    StepAction,
)

BUILTIN_RULE_NAMESPACE = uuid.UUID("0b5e4c3e-6a0f-5d3b-9f1e-6e69636f7275")

# Upstream defaults: a step activity 20 min, 3 attempts (1 s -> 1 min, x2); workflow 60 min.
DEFAULT_STEP_TIMEOUT_SECONDS = 20 * 60.0
DEFAULT_WORKFLOW_TIMEOUT_SECONDS = 60 * 60.0

# Power-on order; power-off runs it backwards.
POWER_ON_ORDER = (ComponentType.POWER_SHELF, ComponentType.NVSWITCH, ComponentType.COMPUTE)

RuleSource = Literal["pinned", "rack", "default", "builtin"]


class RuleNotFound(LookupError):
    """A pinned or rack-associated ruleId names no rule (for the task's operation)."""


@dataclass(frozen=True)
class ResolvedRule:
    rule_id: str
    spec: NicoOperationRuleSpec
    source: RuleSource


def builtin_rule_id(operation: Operation) -> str:
    return str(uuid.uuid5(BUILTIN_RULE_NAMESPACE, f"nicotask/builtin/{operation.value}"))


def _stages(
    order: Iterable[ComponentType], power: PowerAction, expected: PowerState, first: int
) -> list[RuleStep]:
    return [
        RuleStep(
            component_type=ctype,
            stage=first + i,
            max_parallel=0,
            timeout_seconds=DEFAULT_STEP_TIMEOUT_SECONDS,
            retry=RetryPolicy(),
            action=StepAction(type=ActionType.POWER_CONTROL, power=power, expected_state=expected),
        )
        for i, ctype in enumerate(order)
    ]


def builtin_rule(operation: Operation) -> NicoOperationRuleSpec:
    """The built-in default rule of an operation."""
    on_order = list(POWER_ON_ORDER)
    off_order = list(reversed(POWER_ON_ORDER))
    if operation == Operation.POWER_ON:
        steps = _stages(on_order, PowerAction.ON, PowerState.ON, 1)
    elif operation == Operation.POWER_OFF:
        steps = _stages(off_order, PowerAction.GRACEFUL_SHUTDOWN, PowerState.OFF, 1)
    elif operation == Operation.FORCE_OFF:
        steps = _stages(off_order, PowerAction.FORCE_OFF, PowerState.OFF, 1)
    elif operation == Operation.POWER_CYCLE:
        steps = _stages(off_order, PowerAction.GRACEFUL_SHUTDOWN, PowerState.OFF, 1)
        steps += _stages(on_order, PowerAction.ON, PowerState.ON, len(steps) + 1)
    elif operation == Operation.FORCE_CYCLE:
        steps = _stages(off_order, PowerAction.FORCE_OFF, PowerState.OFF, 1)
        steps += _stages(on_order, PowerAction.ON, PowerState.ON, len(steps) + 1)
    else:  # pragma: no cover - every Operation is handled above
        raise ValueError(f"no built-in rule for {operation}")
    return NicoOperationRuleSpec(
        rule_id=builtin_rule_id(operation),
        operation=operation,
        default=True,
        description=f"built-in default rule for {operation.value}",
        workflow_timeout_seconds=DEFAULT_WORKFLOW_TIMEOUT_SECONDS,
        steps=steps,
    )


def _by_id(
    rule_id: str, operation: Operation, rules: list[NicoOperationRule], what: str
) -> NicoOperationRuleSpec:
    wanted = rule_id.lower()
    matches = [r for r in rules if r.spec.rule_id.lower() == wanted]
    if not matches:
        if wanted == builtin_rule_id(operation):
            return builtin_rule(operation)
        builtin_ops = [op for op in Operation if builtin_rule_id(op) == wanted]
        if builtin_ops:
            raise RuleNotFound(
                f"{what} is the built-in rule for {builtin_ops[0].value}, not for {operation.value}"
            )
        raise RuleNotFound(f"{what} matches no NicoOperationRule")
    # Several objects with one ruleId: prefer the one for this operation, oldest first.
    fitting = [r for r in matches if r.spec.operation == operation]
    if not fitting:
        raise RuleNotFound(
            f"{what} is a rule for {matches[0].spec.operation.value}, not for {operation.value}"
        )
    return _oldest(fitting).spec


_FAR_FUTURE = dt.datetime.max.replace(tzinfo=dt.UTC)


def _oldest(rules: list[NicoOperationRule]) -> NicoOperationRule:
    return min(
        rules,
        key=lambda r: (
            r.metadata.creation_timestamp or _FAR_FUTURE,
            r.metadata.name,
            r.metadata.namespace or "",
        ),
    )


def resolve_rule(
    spec: NicoTaskSpec, rack: NicoRack | None, rules: list[NicoOperationRule]
) -> ResolvedRule:
    """The rule that runs a task: pinned > rack > default > built-in.

    Raises RuleNotFound when a pinned or rack-associated ruleId names no rule
    for the task's operation.
    """
    operation = spec.operation
    if spec.rule_id:
        found = _by_id(spec.rule_id, operation, rules, f"spec.ruleId {spec.rule_id}")
        return ResolvedRule(found.rule_id, found, "pinned")
    if rack is not None:
        for entry in rack.spec.rules:
            if entry.operation == operation:
                found = _by_id(
                    entry.rule_id,
                    operation,
                    rules,
                    f"ruleId {entry.rule_id} of rack {rack.metadata.name} for {operation.value}",
                )
                return ResolvedRule(found.rule_id, found, "rack")
    defaults = [r for r in rules if r.spec.default and r.spec.operation == operation]
    if defaults:
        chosen = _oldest(defaults).spec
        return ResolvedRule(chosen.rule_id, chosen, "default")
    builtin = builtin_rule(operation)
    return ResolvedRule(builtin.rule_id, builtin, "builtin")
