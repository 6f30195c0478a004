"""Cancel a Redfish-driven task mid-stage: no BMC request starts after the terminate.

The proof comes from the emulator itself: its request log is read before
and after, and no ComputerSystem.Reset may arrive after the task shows
Terminated (which the operator writes only after Temporal confirmed the
terminate), beyond a request that was already on the wire. Heartbeats are
throttled to tens of seconds, so what stops the resets is the worker's
run-guard check before each one (temporal/run_guard.py).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
from e2e_support import Cluster, new_rule_id, rack, stage_statuses, task

from nicotask import api
from nicotask_dev.devenv.testing import DevEnvHandle

RESET = "Actions/ComputerSystem.Reset"


def _resets(log: Path, system_ids: list[str]) -> int:
    text = log.read_text(errors="replace")
    return sum(
        1
        for line in text.splitlines()
        if "POST" in line and RESET in line and any(s in line for s in system_ids)
    )


async def test_cancel_mid_stage_stops_bmc_requests(
    cluster: Cluster, nicotask_system: DevEnvHandle
) -> None:
    env = nicotask_system
    computes = [s for s in env.redfish_systems if s["type"] == "compute"]
    ids = [s["id"] for s in computes]
    log = Path(env.env.record("redfish").log)
    rule_id = new_rule_id()
    await cluster.create(
        api.RULES,
        {
            "apiVersion": api.API_VERSION,
            "kind": "NicoOperationRule",
            "metadata": {"name": "serial-power-on"},
            "spec": {
                "ruleId": rule_id,
                "operation": "PowerOn",
                "steps": [
                    {
                        # One tray at a time, each waiting for On (the emulator
                        # applies a power change 1-11 s after the request): the
                        # stage lasts long enough to be cancelled in its middle.
                        "componentType": "Compute",
                        "stage": 1,
                        "maxParallel": 1,
                        "timeoutSeconds": 60,
                        "retry": {"maxAttempts": 1},
                        "action": {
                            "type": "PowerControl",
                            "power": "On",
                            "expectedState": "On",
                            "pollIntervalSeconds": 0.5,
                        },
                    }
                ],
            },
        },
    )
    await cluster.create(api.RACKS, rack("rack-1", env.redfish_url, computes))
    await _power(env, ids, "ForceOff", "Off")  # a known start: every tray off
    before = _resets(log, ids)
    await cluster.create(api.TASKS, task("power-on", "rack-1", rule_id, operation="PowerOn"))
    # Wait until the stage is running and the first BMC request went out.
    await cluster.wait_task(
        "power-on", lambda t: stage_statuses(t) == ["running"], 60, "stage running"
    )
    for _ in range(100):
        if _resets(log, ids) > before:
            break
        await asyncio.sleep(0.1)
    await cluster.cancel("power-on")
    done = await cluster.wait_status("power-on", "Terminated", "Failed", "Succeeded", timeout=30)
    assert done["status"]["status"] == "Terminated"
    # A reset already on the wire may still land; after that the emulator sees nothing new.
    await asyncio.sleep(1.5)
    settled = _resets(log, ids)
    await asyncio.sleep(10)
    assert _resets(log, ids) == settled, "a BMC reset started after the workflow was terminated"
    # Serial and cancelled early: most compute trays were never touched.
    assert settled - before < len(ids)
    await _power(env, ids, "On", "On")  # leave the trays on, as the other tests expect


async def _power(env: DevEnvHandle, ids: list[str], reset: str, state: str) -> None:
    """Reset every tray straight through Redfish and wait until all show `state`."""
    auth = (env.redfish_user, env.redfish_password)
    async with httpx.AsyncClient(auth=auth, timeout=10) as http:
        for sid in ids:
            url = f"{env.redfish_url}/redfish/v1/Systems/{sid}/{RESET}"
            answer = await http.post(url, json={"ResetType": reset})
            assert answer.status_code < 300, answer.text
        for _ in range(300):
            states = [
                (await http.get(f"{env.redfish_url}/redfish/v1/Systems/{sid}"))
                .json()
                .get("PowerState")
                for sid in ids
            ]
            if all(s == state for s in states):
                return
            await asyncio.sleep(0.2)
    raise AssertionError(f"trays did not reach {state}: {states}")
