"""The objects the bench creates: provider, site, a long Sleep rule, one-component racks, tasks."""

from __future__ import annotations

from typing import Any

from nicotask import api

GROUP, VERSION = api.GROUP, api.VERSION
NAMESPACE = "bench"
ORG = "acme"
SITE_ID = "660e8400-e29b-41d4-a716-446655440000"
PROVIDER_ID = "550e8400-e29b-41d4-a716-446655440000"
RULE_ID = "b0b0b0b0-0000-4000-8000-00000000be01"
SECRET = "bench-bmc"
PHASE_LABEL = "bench.nico.dev/phase"
SLEEP_SECONDS = 3600.0


def provider() -> dict[str, Any]:
    """The NicoProvider of org acme (cluster-scoped), as samples/provider.yaml."""
    return api.PROVIDER_RESOURCE.manifest(
        ORG, {"org": ORG, "providerId": PROVIDER_ID, "displayName": "ACME (bench)"}
    )


def site() -> dict[str, Any]:
    """The NicoSite the bench's tasks belong to (cluster-scoped), as samples/site.yaml."""
    return api.SITE_RESOURCE.manifest(
        SITE_ID,
        {"siteId": SITE_ID, "providerRef": ORG, "displayName": "ACME site 1 (bench)"},
    )


def sleep_rule(seconds: float = SLEEP_SECONDS) -> dict[str, Any]:
    """A PowerOn rule with one Compute step in stage 1 that sleeps `seconds` (no BMC calls)."""
    timeout = max(120.0, seconds * 2)
    return api.RULE_RESOURCE.manifest(
        "bench-sleep",
        {
            "ruleId": RULE_ID,
            "operation": "PowerOn",
            "default": False,
            "workflowTimeoutSeconds": timeout,
            "steps": [
                {
                    "componentType": "Compute",
                    "stage": 1,
                    "timeoutSeconds": timeout,
                    "retry": {"maxAttempts": 1},
                    "action": {"type": "Sleep", "durationSeconds": seconds},
                }
            ],
        },
    )


def rack(name: str, redfish_url: str, system: dict[str, Any]) -> dict[str, Any]:
    """A rack with one Compute component (one emulated system)."""
    return api.RACK_RESOURCE.manifest(
        name,
        {
            "siteId": SITE_ID,
            "credentials": {"name": SECRET},
            "tls": {"allowInsecureHttp": True},  # the emulator speaks http
            "components": [
                {
                    "id": system["name"],
                    "type": "Compute",
                    "redfish": {"endpoint": redfish_url, "systemId": system["id"]},
                }
            ],
        },
    )


def task(
    name: str, rack_name: str, phase: str, *, rule_id: str | None = RULE_ID, cancel: bool = False
) -> dict[str, Any]:
    """A PowerOn task on `rack_name`, labelled with the bench phase that created it."""
    spec: dict[str, Any] = {"siteId": SITE_ID, "rackRef": rack_name, "operation": "PowerOn"}
    if rule_id:
        spec["ruleId"] = rule_id
    if cancel:
        spec["cancel"] = True
    return api.TASK_RESOURCE.manifest(name, spec, labels={PHASE_LABEL: phase})


def rack_name(i: int) -> str:
    return f"bench-rack-{i:05d}"


def task_name(phase: str, i: int) -> str:
    return f"{phase}-{i:05d}"
