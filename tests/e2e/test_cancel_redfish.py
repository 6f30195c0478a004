"""Cancel a Redfish-driven task mid-stage: no BMC request starts after the terminate.

The proof comes from the emulator itself: its request log is read before
and after, and no ComputerSystem.Reset may arrive after the task shows
Terminated (which the operator writes only after Temporal confirmed the
terminate), beyond a request that was already on the wire. Heartbeats are
throttled to tens of seconds, so what stops the resets is the worker's
liveness check before each one (temporal/liveness.py).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from e2e_support import Cluster, new_rule_id, rack, stage_statuses, task

from nicotask import api
from nicotask.devenv.testing import DevEnvHandle

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
        "nicooperationrules",
        {
            "apiVersion": api.API_VERSION,
            "kind": "NicoOperationRule",
            "metadata": {"name": "serial-cycle"},
            "spec": {
                "ruleId": rule_id,
                "operation": "PowerCycle",
                "steps": [
                    {
                        "componentType": "Compute",
                        "stage": 1,
                        "maxParallel": 1,
                        "timeoutSeconds": 60,
                        "retry": {"maxAttempts": 1},
                        "action": {"type": "PowerControl", "power": "PowerCycle"},
                    }
                ],
            },
        },
    )
    await cluster.create("nicoracks", rack("rack-1", env.redfish_url, computes))
    before = _resets(log, ids)
    await cluster.create("nicotasks", task("cycle", "rack-1", rule_id, operation="PowerCycle"))
    # Wait until the stage is running and the first BMC request went out.
    await cluster.wait_task(
        "cycle", lambda t: stage_statuses(t) == ["running"], 60, "stage running"
    )
    for _ in range(100):
        if _resets(log, ids) > before:
            break
        await asyncio.sleep(0.1)
    await cluster.cancel("cycle")
    done = await cluster.wait_status("cycle", "Terminated", "Failed", "Succeeded", timeout=30)
    assert done["status"]["status"] == "Terminated"
    # A reset already on the wire may still land; after that the emulator sees nothing new.
    await asyncio.sleep(1.5)
    settled = _resets(log, ids)
    await asyncio.sleep(10)
    assert _resets(log, ids) == settled, "a BMC reset started after the workflow was terminated"
    # Serial and cancelled early: most compute trays were never touched.
    assert settled - before < 2 * len(ids)
