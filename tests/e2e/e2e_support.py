"""Helpers for the whole-system tests: objects to create, and waiting on the real API."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import Any

from kubernetes_asyncio import client
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from nicotask import api
from nicotask.kube import Kube, NotFound

SITE_ID = "660e8400-e29b-41d4-a716-446655440000"
OTHER_SITE_ID = "770e8400-e29b-41d4-a716-446655440000"

# The e2e operator's settings: fast reconcile, short queue timeout, small queue.
OPERATOR_SETTINGS = {
    "NICOTASK_RECONCILE_INTERVAL_SECONDS": "2",
    "NICOTASK_QUEUE_TIMEOUT_SECONDS": "20",
    "NICOTASK_QUEUE_LIMIT": "2",
    "NICOTASK_JSON_LOGS": "true",  # test_observability reads the log, after any restart
}
# The shim's settings in these tests (start_shim keeps a live one): JSON logs, as above.
SHIM_SETTINGS = {"NICOTASK_JSON_LOGS": "true"}


def sleep_rule(
    rule_id: str, seconds: list[float], *, operation: str = "PowerOn", default: bool = False
) -> dict[str, Any]:
    """A fast rule: stage i sleeps seconds[i] on Compute (and NVSwitch in stage 1)."""
    steps: list[dict[str, Any]] = []
    for i, secs in enumerate(seconds, start=1):
        steps.append(
            {
                "componentType": "Compute",
                "stage": i,
                "timeoutSeconds": 120,
                "retry": {"maxAttempts": 1},
                "action": {"type": "Sleep", "durationSeconds": secs},
            }
        )
    return api.RULE_RESOURCE.manifest(
        f"rule-{rule_id[:8]}",
        {"ruleId": rule_id, "operation": operation, "default": default, "steps": steps},
    )


def rack(
    name: str, redfish_url: str, systems: list[dict[str, Any]], site: str = SITE_ID
) -> dict[str, Any]:
    kinds = {"compute": "Compute", "nvswitch": "NVSwitch", "powershelf": "PowerShelf"}
    return api.RACK_RESOURCE.manifest(
        name,
        {
            "siteId": site,
            "credentials": {"name": "bmc-credentials"},
            "tls": {"allowInsecureHttp": True},  # the emulator speaks http
            "components": [
                {
                    "id": s["name"],
                    "type": kinds[s["type"]],
                    "redfish": {"endpoint": redfish_url, "systemId": s["id"]},
                }
                for s in systems
            ],
        },
    )


def task(name: str, rack_name: str, rule_id: str | None = None, **spec: Any) -> dict[str, Any]:
    body = api.TASK_RESOURCE.manifest(
        name, {"siteId": SITE_ID, "rackRef": rack_name, "operation": "PowerOn", **spec}
    )
    if rule_id:
        body["spec"]["ruleId"] = rule_id
    return body


def new_rule_id() -> str:
    return str(uuid.uuid4())


class Cluster:
    """The few API calls the system tests make, on the admin client."""

    def __init__(self, api_client: client.ApiClient, namespace: str) -> None:
        self.kube = Kube(api_client)
        self.core = self.kube.core
        self.ns = namespace

    async def create(self, plural: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self.kube.create(plural, body, self.ns)

    async def sleeping_task(self, env: Any, name: str = "t1") -> dict[str, Any]:
        """Task `name` on rack-1 (the first emulated system) with a rule that sleeps 120 s."""
        rule_id = new_rule_id()
        await self.create(api.RULES, sleep_rule(rule_id, [120]))
        await self.create(api.RACKS, rack("rack-1", env.redfish_url, env.redfish_systems[:1]))
        return await self.create(api.TASKS, task(name, "rack-1", rule_id))

    async def bmc_secret(self, user: str, password: str) -> None:
        await self.core.create_namespaced_secret(
            self.ns,
            client.V1Secret(
                metadata=client.V1ObjectMeta(
                    name="bmc-credentials", labels={api.BMC_CREDENTIALS_LABEL: "true"}
                ),
                string_data={"username": user, "password": password},
            ),
        )

    async def get_task(self, name: str) -> dict[str, Any]:
        return await self.kube.get(api.TASKS, name, self.ns)

    async def patch_task(self, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        return await self.kube.patch(api.TASKS, name, patch, self.ns)

    async def cancel(self, name: str) -> dict[str, Any]:
        return await self.patch_task(name, {"spec": {"cancel": True}})

    async def delete_task(self, name: str) -> None:
        await self.kube.delete(api.TASKS, name, self.ns)

    async def events(self, name: str) -> list[client.CoreV1Event]:
        result = await self.core.list_namespaced_event(
            self.ns, field_selector=f"involvedObject.name={name}"
        )
        return list(result.items)

    async def wait_event(self, name: str, reason: str, timeout: float = 10.0) -> None:
        """Events are written just after the status; wait for one to show up."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if reason in {e.reason for e in await self.events(name)}:
                return
            await asyncio.sleep(0.2)
        raise AssertionError(f"task {name}: no {reason} event within {timeout}s")

    async def wait_task(
        self,
        name: str,
        predicate: Callable[[dict[str, Any]], bool],
        timeout: float = 60.0,
        what: str = "condition",
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        last: dict[str, Any] = {}
        while time.monotonic() < deadline:
            try:
                last = await self.get_task(name)
            except NotFound:
                pass
            else:
                if predicate(last):
                    return last
            await asyncio.sleep(0.2)
        raise AssertionError(
            f"task {name}: timed out waiting for {what}; last: {last.get('status')}"
        )

    async def wait_gone(self, name: str, timeout: float = 60.0) -> None:
        """Until the task no longer exists (deleted, its finalizer done)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                await self.get_task(name)
            except NotFound:
                return
            await asyncio.sleep(0.2)
        raise AssertionError(f"task {name} still exists after {timeout}s")

    async def wait_status(self, name: str, *statuses: str, timeout: float = 60.0) -> dict[str, Any]:
        return await self.wait_task(
            name, lambda t: status_of(t) in statuses, timeout, what=f"status in {statuses}"
        )


def status_of(obj: dict[str, Any]) -> str | None:
    return (obj.get("status") or {}).get("status")


def stage_statuses(obj: dict[str, Any]) -> list[str]:
    report = (obj.get("status") or {}).get("report") or {}
    return [s["status"] for s in report.get("stages", [])]


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any] | None:
    for cond in (obj.get("status") or {}).get("conditions", []):
        if cond["type"] == type_:
            return dict(cond)
    return None


async def workflow_status(temporal_client: Client, uid: str) -> WorkflowExecutionStatus | None:
    """The task's workflow status as Temporal describes it; None if there is no such workflow."""
    try:
        desc = await temporal_client.get_workflow_handle(uid).describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return None
        raise
    return desc.status
