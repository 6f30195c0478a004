"""An operator with a site selector (NICOTASK_SITE_SELECTOR) serves, and counts, its shard only.

The session's operator is stopped for the test (it serves every task), a
sharded one runs instead, then the session's operator comes back.
"""

from __future__ import annotations

import asyncio
import urllib.request

from e2e_support import OPERATOR_SETTINGS, Cluster, new_rule_id, rack, sleep_rule, task
from prometheus_client.parser import text_string_to_metric_families

from nicotask import api
from nicotask_dev.devenv import system
from nicotask_dev.devenv.testing import DevEnvHandle

SHARD_LABEL = "nico.dev/shard"


def live_tasks_counted(url: str) -> float:
    with urllib.request.urlopen(url, timeout=10) as resp:
        text = resp.read().decode()
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "nicotask_tasks"
    )


async def counted(url: str, expected: float, timeout: float = 20.0) -> None:
    """Wait until the operator's live-task gauge sums to `expected`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (seen := live_tasks_counted(url)) != expected:
        assert loop.time() < deadline, f"nicotask_tasks sums to {seen}, not {expected}"
        await asyncio.sleep(0.5)


async def test_sharded_operator_serves_and_counts_only_its_shard(
    cluster: Cluster, nicotask_system: DevEnvHandle
) -> None:
    env = nicotask_system.env
    rule_id = new_rule_id()
    await cluster.create(api.RULES, sleep_rule(rule_id, [120]))
    systems = nicotask_system.redfish_systems
    for i in range(3):
        body = rack(f"rack-{i}", nicotask_system.redfish_url, systems[:1])
        await cluster.create(api.RACKS, body)
    env.stop_process("operator")
    try:
        system.start_operator(
            env, "operator-shard", NICOTASK_SITE_SELECTOR=f"{SHARD_LABEL}=a", **OPERATOR_SETTINGS
        )
        for i, shard in enumerate(("a", "a", "b")):
            body = task(f"t-{shard}-{i}", f"rack-{i}", rule_id)
            body["metadata"]["labels"] = {SHARD_LABEL: shard}
            await cluster.create(api.TASKS, body)
        await cluster.wait_status("t-a-0", "Running")
        await cluster.wait_status("t-a-1", "Running")
        # Shard b is nobody's here: untouched, and not counted.
        assert "status" not in await cluster.get_task("t-b-2")
        metrics = env.record("operator-shard").url
        await counted(metrics, 2)
        await cluster.cancel("t-a-0")
        await cluster.wait_status("t-a-0", "Terminated")
        await counted(metrics, 1)  # finished tasks are not live
        assert "status" not in await cluster.get_task("t-b-2")
    finally:
        env.stop_process("operator-shard")
        system.start_operator(env, **OPERATOR_SETTINGS)
    # The session's operator serves every shard again.
    await cluster.wait_status("t-b-2", "Running")
