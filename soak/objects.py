"""The soak's objects: Sleep rules and Redfish rules for PowerOn/PowerOff/PowerCycle,
one-component racks, tasks."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from bench import objects as bo

from nicotask import api

NAMESPACE = "soak"
ORG = bo.ORG
SITE_ID = bo.SITE_ID
SECRET = "soak-bmc"
OPERATIONS = ("PowerOn", "PowerOff", "PowerCycle")
_NS = uuid.UUID("5a0c0000-0000-4000-8000-000000000023")


@dataclass(frozen=True)
class Rule:
    name: str
    rule_id: str
    operation: str
    redfish: bool
    body: dict[str, Any]


def _rule_id(name: str) -> str:
    return str(uuid.uuid5(_NS, name))


def _sleep_step(stage: int, seconds: float) -> dict[str, Any]:
    return {
        "componentType": "Compute",
        "stage": stage,
        "timeoutSeconds": 600,
        "retry": {"maxAttempts": 1},
        "action": {"type": "Sleep", "durationSeconds": seconds},
    }


def _power_step(stage: int, power: str, expected: str) -> dict[str, Any]:
    return {
        "componentType": "Compute",
        "stage": stage,
        "timeoutSeconds": 90,
        "retry": {
            "maxAttempts": 3,
            "initialIntervalSeconds": 1,
            "backoffCoefficient": 2,
            "maxIntervalSeconds": 5,
        },
        "action": {
            "type": "PowerControl",
            "power": power,
            "expectedState": expected,
            "pollIntervalSeconds": 1,
        },
    }


def sleep_rules(scale: float) -> list[Rule]:
    """Per operation: short, medium and long two-stage Sleep rules (no BMC call)."""
    out = []
    for op in OPERATIONS:
        for label, secs in (("short", 2.0), ("medium", 6.0), ("long", 15.0)):
            s = max(1.0, round(secs * scale, 1))
            name = f"soak-sleep-{op.lower()}-{label}"
            spec: dict[str, Any] = {
                "ruleId": _rule_id(name),
                "operation": op,
                "default": False,
                "workflowTimeoutSeconds": 1800,
                "steps": [_sleep_step(1, s), _sleep_step(2, s)],
            }
            body = api.RULE_RESOURCE.manifest(name, spec)
            out.append(Rule(name, spec["ruleId"], op, False, body))
    return out


def redfish_rules() -> list[Rule]:
    """Rules that drive the BMCs (through the fault proxy), with a graceful-stop cleanup."""
    steps = {
        "PowerOn": [_power_step(1, "On", "On"), _sleep_step(2, 2.0)],
        "PowerOff": [_sleep_step(1, 2.0), _power_step(2, "ForceOff", "Off")],
        "PowerCycle": [_power_step(1, "ForceOff", "Off"), _power_step(2, "On", "On")],
    }
    out = []
    for op, st in steps.items():
        name = f"soak-redfish-{op.lower()}"
        spec: dict[str, Any] = {
            "ruleId": _rule_id(name),
            "operation": op,
            "default": False,
            "workflowTimeoutSeconds": 1800,
            "steps": st,
        }
        if op == "PowerOn":
            spec["cleanupTimeoutSeconds"] = 120
            spec["cleanup"] = [{**_power_step(1, "ForceOff", "Off"), "targets": "ActedOn"}]
        out.append(Rule(name, spec["ruleId"], op, True, api.RULE_RESOURCE.manifest(name, spec)))
    return out


def probe_rule() -> Rule:
    name = "soak-probe"
    spec: dict[str, Any] = {
        "ruleId": _rule_id(name),
        "operation": "PowerOn",
        "default": False,
        "steps": [_sleep_step(1, 1.0)],
    }
    return Rule(name, spec["ruleId"], "PowerOn", False, api.RULE_RESOURCE.manifest(name, spec))


def rack(name: str, endpoint: str, system: dict[str, Any]) -> dict[str, Any]:
    return api.RACK_RESOURCE.manifest(
        name,
        {
            "siteId": SITE_ID,
            "credentials": {"name": SECRET},
            "tls": {"allowInsecureHttp": True},
            "components": [
                {
                    "id": system["name"],
                    "type": "Compute",
                    "redfish": {"endpoint": endpoint, "systemId": system["id"]},
                }
            ],
        },
    )


def task(name: str, rack_name: str, rule: Rule) -> dict[str, Any]:
    return api.TASK_RESOURCE.manifest(
        name,
        {
            "siteId": SITE_ID,
            "rackRef": rack_name,
            "operation": rule.operation,
            "ruleId": rule.rule_id,
            "description": f"soak {rule.name}",
        },
        labels={"soak.nico.dev/rule": rule.name},
    )
