"""The Temporal server's database restarted under live tasks (the server pass only).

PostgreSQL, the server's store and visibility, is stopped with 200 tasks Running;
while it is down half of them are cancelled and a few more tasks are created, then it
starts again. No task may be lost, every cancel made meanwhile is applied after the
restart (and not before: Temporal cannot confirm it without its store), and nothing
stays Running, in Kubernetes or in Temporal. Rules sleep (Temporal timers), so no
BMC is involved and the test takes about two minutes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import pytest
from e2e_support import Cluster, condition, new_rule_id, rack, sleep_rule, status_of, task
from temporalio.client import Client, WorkflowExecutionStatus

from nicotask import api
from nicotask.lifecycle import CANCELLED_BY_USER
from nicotask_dev.devenv.testing import DevEnvHandle

LIVE = 200
CREATED_DURING = 10
IN_FLIGHT = 20
# Long enough that every task still sleeps when the cancels are made after the start of
# 200 tasks on a loaded machine; short enough that the rest finish soon after.
LIVE_SLEEP_S = 90.0
FINISHED = ("Succeeded", "Failed", "Terminated")


async def _bounded(calls: Iterable[Callable[[], Awaitable[Any]]]) -> list[Any]:
    gate = asyncio.Semaphore(IN_FLIGHT)

    async def one(call: Callable[[], Awaitable[Any]]) -> Any:
        async with gate:
            return await call()

    return await asyncio.gather(*(one(c) for c in calls))


async def _tasks(cluster: Cluster) -> dict[str, dict[str, Any]]:
    items = await cluster.kube.list_objects(api.TASKS, cluster.ns)
    return {t["metadata"]["name"]: t for t in items}


async def _wait_all(
    cluster: Cluster,
    names: set[str],
    ok: Callable[[dict[str, Any]], bool],
    timeout: float,
    what: str,
) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        tasks = await _tasks(cluster)
        behind = {n for n in names if n not in tasks or not ok(tasks[n])}
        if not behind:
            return tasks
        if time.monotonic() > deadline:
            sample = {n: (tasks.get(n) or {}).get("status") for n in sorted(behind)[:3]}
            raise AssertionError(f"{len(behind)} of {len(names)} tasks not {what}: {sample}")
        await asyncio.sleep(1.0)


def _cancel_pending(t: dict[str, Any]) -> bool:
    return (condition(t, "CancelPending") or {}).get("status") == "True"


async def test_postgres_restarted_under_live_tasks(
    cluster: Cluster, nicotask_system: DevEnvHandle, temporal_client: Client
) -> None:
    if nicotask_system.state.get("temporal_mode") != "server":
        pytest.skip("needs the Temporal server on PostgreSQL (NICOTASK_TEMPORAL=server)")
    env = nicotask_system.env
    system = nicotask_system.redfish_systems[:1]
    long_rule, short_rule = new_rule_id(), new_rule_id()
    await cluster.create(api.RULES, sleep_rule(long_rule, [LIVE_SLEEP_S]))
    await cluster.create(api.RULES, sleep_rule(short_rule, [2.0]))
    total = LIVE + CREATED_DURING
    await _bounded(
        (
            lambda i=i: cluster.create(
                api.RACKS, rack(f"rack-{i}", nicotask_system.redfish_url, system)
            )
        )
        for i in range(total)
    )
    live = [f"live-{i}" for i in range(LIVE)]
    await _bounded(
        (lambda i=i: cluster.create(api.TASKS, task(live[i], f"rack-{i}", long_rule)))
        for i in range(LIVE)
    )
    await _wait_all(cluster, set(live), lambda t: status_of(t) == "Running", 240, "Running")
    cancelled, left = set(live[::2]), set(live[1::2])
    during = [f"new-{i}" for i in range(CREATED_DURING)]

    with env.stopped("postgres"):
        patched = await _bounded((lambda n=n: cluster.cancel(n)) for n in sorted(cancelled))
        assert {status_of(t) for t in patched} == {"Running"}
        await _bounded(
            (lambda i=i: cluster.create(api.TASKS, task(during[i], f"rack-{LIVE + i}", short_rule)))
            for i in range(CREATED_DURING)
        )
        # Every cancel is waiting for Temporal, and none is applied without it.
        tasks = await _wait_all(cluster, cancelled, _cancel_pending, 120, "CancelPending")
        assert {status_of(tasks[n]) for n in cancelled} == {"Running"}
        assert {status_of(tasks[n]) for n in during} <= {None, "Pending"}

    # After the restart: every cancel applied, the rest finish by themselves.
    tasks = await _wait_all(
        cluster, cancelled | set(during), lambda t: status_of(t) in FINISHED, 180, "finished"
    )
    for name in cancelled:
        st = tasks[name]["status"]
        assert (st["status"], st["message"]) == ("Terminated", CANCELLED_BY_USER), name
        assert condition(tasks[name], "CancelPending") is None, name
    for name in during:
        assert status_of(tasks[name]) == "Succeeded", tasks[name]["status"]
    tasks = await _wait_all(
        cluster, left, lambda t: status_of(t) in FINISHED, LIVE_SLEEP_S + 120, "finished"
    )
    assert {status_of(tasks[n]) for n in left} == {"Succeeded"}

    # No task lost: each has exactly its workflow in Temporal, closed as its status says.
    expected = {
        **{n: WorkflowExecutionStatus.TERMINATED for n in cancelled},
        **{n: WorkflowExecutionStatus.COMPLETED for n in left | set(during)},
    }
    assert set(tasks) == set(expected)

    async def temporal_status(name: str) -> tuple[str, Any]:
        t = tasks[name]
        assert t["status"]["workflowId"] == t["metadata"]["uid"], name
        desc = await temporal_client.get_workflow_handle(t["metadata"]["uid"]).describe()
        return name, desc.status

    described = dict(await _bounded((lambda n=n: temporal_status(n)) for n in expected))
    assert described == expected
