"""Two operator replicas under kopf peering, the active one SIGSTOPped past its lifetime.

Found by the fault soak: kopf pauses a standby's watches and handlers, but
the operator's own work queue and follower went on acting from its frozen
view (here: expiring a task that the active replica keeps waiting). And a
standby paused while the active replica finished a task never sees that task
leave its watch (kopf re-lists on resuming, and drops nothing from its index):
when it took over, the finished task still held its rack, and a task created
for that rack was queued Waiting until the queue timeout. The session's
operator (standalone) is stopped for the test; two peered replicas run instead.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import time
from pathlib import Path

from e2e_support import OPERATOR_SETTINGS, Cluster, new_rule_id, rack, sleep_rule, status_of, task

from nicotask import api
from nicotask_dev.devenv import system
from nicotask_dev.devenv.env import DevEnv
from nicotask_dev.devenv.testing import DevEnvHandle

REPO = Path(__file__).resolve().parents[2]
PEERING_CRDS = REPO / "charts" / "nicotask" / "crds" / "kopf.dev_peerings.yaml"
LIFETIME = 4  # seconds: kopf's keep-alive lifetime; a standby takes over after it
B_QUEUE_TIMEOUT = 12  # seconds: the standby's queue timeout (the active one's is long)


def _peering(env: DevEnv) -> str:
    name = f"e2e-{secrets.token_hex(3)}"
    system.kubectl(env, "apply", "-f", str(PEERING_CRDS))
    system.kubectl(
        env,
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/clusterkopfpeerings.kopf.dev",
    )
    system.kubectl(
        env,
        "apply",
        "-f",
        "-",
        stdin=f"apiVersion: kopf.dev/v1\nkind: ClusterKopfPeering\nmetadata:\n  name: {name}\n",
    )
    return name


def _signal(env: DevEnv, name: str, sig: signal.Signals) -> None:
    os.killpg(env.record(name).pid, sig)


def _log_lines(env: DevEnv, name: str, needle: str) -> list[str]:
    text = Path(env.record(name).log).read_text(errors="replace")
    return [line for line in text.splitlines() if needle in line]


async def _until_log(env: DevEnv, name: str, needle: str, count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while len(_log_lines(env, name, needle)) < count:
        assert time.monotonic() < deadline, f"{name}: fewer than {count} lines with {needle!r}"
        await asyncio.sleep(0.3)


def _message(line: str) -> str:
    try:
        return str(json.loads(line).get("message", line))
    except ValueError:
        return line


async def test_a_paused_standby_does_not_act_and_takes_over_with_a_free_rack(
    cluster: Cluster, nicotask_system: DevEnvHandle
) -> None:
    env = nicotask_system.env
    peering = _peering(env)
    long_rule, short_rule = new_rule_id(), new_rule_id()
    await cluster.create(api.RULES, sleep_rule(long_rule, [40]))
    await cluster.create(api.RULES, sleep_rule(short_rule, [1], operation="PowerOff"))
    body = rack("rack-1", nicotask_system.redfish_url, nicotask_system.redfish_systems[:1])
    await cluster.create(api.RACKS, body)
    settings = {
        **OPERATOR_SETTINGS,
        "NICOTASK_PEERING": peering,
        "NICOTASK_PEERING_LIFETIME_SECONDS": str(LIFETIME),
    }
    # Only the standby would expire a Waiting task soon: whatever expires one while
    # operator-a is active was done by a paused operator-b.
    a_settings = {**settings, "NICOTASK_QUEUE_TIMEOUT_SECONDS": "600"}
    b_settings = {**settings, "NICOTASK_QUEUE_TIMEOUT_SECONDS": str(B_QUEUE_TIMEOUT)}
    active, standby = "peering: active, serving tasks", "peering: standby, not acting"
    env.stop_process("operator")
    stopped = False
    try:
        system.start_operator(env, "operator-a", NICOTASK_PEERING_PRIORITY="200", **a_settings)
        system.start_operator(env, "operator-b", NICOTASK_PEERING_PRIORITY="100", **b_settings)
        await _until_log(env, "operator-a", active, 1, 60)
        await cluster.create(api.TASKS, task("t-1", "rack-1", long_rule))
        await cluster.wait_status("t-1", "Running", timeout=30)

        # operator-a stops past its lifetime: operator-b takes over and queues t-2.
        _signal(env, "operator-a", signal.SIGSTOP)
        stopped = True
        await _until_log(env, "operator-b", active, 1, 30)
        await cluster.create(api.TASKS, task("t-2", "rack-1", short_rule, operation="PowerOff"))
        await cluster.wait_status("t-2", "Waiting", timeout=15)
        # operator-a is back: operator-b pauses, operator-a stands by until it is seen
        # alive again, then serves.
        paused, resumed = (len(_log_lines(env, "operator-a", x)) for x in (standby, active))
        _signal(env, "operator-a", signal.SIGCONT)
        stopped = False
        await _until_log(env, "operator-b", standby, 1, 30)
        await _until_log(env, "operator-a", standby, paused + 1, 30)
        await _until_log(env, "operator-a", active, resumed + 1, 30)

        # Past operator-b's queue timeout, t-2 still waits for t-1: the paused standby
        # did not act on its frozen view (it used to expire t-2 here).
        await asyncio.sleep(B_QUEUE_TIMEOUT + 5)
        assert status_of(await cluster.get_task("t-2")) == "Waiting"
        # t-1 finishes while operator-b is paused (it never sees t-1 leave its watch);
        # operator-a starts t-2.
        done = await cluster.wait_status("t-1", "Succeeded", "Failed", "Terminated", timeout=40)
        assert status_of(done) == "Succeeded"
        done = await cluster.wait_status("t-2", "Succeeded", "Failed", "Terminated", timeout=30)
        assert status_of(done) == "Succeeded"

        # operator-a stops again: operator-b takes over, kopf's index still holding t-1
        # Running. A task for the rack runs (it was queued behind t-1 for good).
        _signal(env, "operator-a", signal.SIGSTOP)
        stopped = True
        await _until_log(env, "operator-b", active, 2, 30)
        await cluster.create(api.TASKS, task("t-3", "rack-1", short_rule, operation="PowerOff"))
        done = await cluster.wait_status("t-3", "Succeeded", "Failed", "Terminated", timeout=30)
        assert status_of(done) == "Succeeded", done.get("status")
    finally:
        if stopped:
            _signal(env, "operator-a", signal.SIGCONT)
        env.stop_process("operator-a")
        env.stop_process("operator-b")
        system.start_operator(env, **OPERATOR_SETTINGS)
