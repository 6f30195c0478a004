"""The follower on a visibility store that lags (the Temporal server pass only).

The real server writes visibility records after the fact, from a queue; a
slow or busy store shows a close late. Here the lag is made, not hoped for: a
transaction holds a row lock on one execution's visibility record in PostgreSQL,
so the server's write of that close waits while everything else goes on.

- A close from outside nicotask (a Terminate with the CLI), which only the
  follower can bring to the task: while visibility lags, another task's close
  shows and moves the follower's watermark past it by more than its overlap, so
  the close, once visible, is older than anything the 1 s pass still asks for.
  The task must reach Terminated anyway: the full reconcile, which finds it
  missing from the running executions twice in a row.
- A workflow that ends by itself while its record is locked: its final report
  (nothing pending or running), written just before the close, has the operator
  read the outcome from the execution itself, so the task finishes while
  visibility still says Running.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time

import pytest
from e2e_support import Cluster, new_rule_id, rack, sleep_rule, task
from temporalio.client import Client, WorkflowExecutionStatus

from nicotask import api
from nicotask.operator.follower import OVERLAP
from nicotask_dev.devenv.pgsession import PsqlSession
from nicotask_dev.devenv.temporalserver import VISIBILITY_DB
from nicotask_dev.devenv.testing import DevEnvHandle

TERMINAL = api.FINISHED_STATUS_VALUES


def _server_only(env: DevEnvHandle) -> None:
    if env.state.get("temporal_mode") != "server":
        pytest.skip("needs the Temporal server on PostgreSQL (NICOTASK_TEMPORAL=server)")


async def _visible(
    client: Client, workflow_id: str, status: WorkflowExecutionStatus, timeout: float = 60
) -> dt.datetime | None:
    """Wait until visibility lists the execution with `status`; its close time."""
    deadline = time.monotonic() + timeout
    while True:
        async for ex in client.list_workflows(f"WorkflowId = '{workflow_id}'"):
            if ex.status == status:
                return ex.close_time
        if time.monotonic() > deadline:
            raise AssertionError(f"visibility never listed {workflow_id} as {status.name}")
        await asyncio.sleep(0.5)


async def _visible_status(client: Client, workflow_id: str) -> WorkflowExecutionStatus | None:
    async for ex in client.list_workflows(f"WorkflowId = '{workflow_id}'"):
        return ex.status
    return None


def _lock(workflow_id: str) -> str:
    # The close is an upsert of this row: it waits for the lock.
    return (
        f"SELECT run_id FROM executions_visibility WHERE workflow_id = '{workflow_id}' FOR UPDATE;"
    )


async def _running_task(
    cluster: Cluster, env: DevEnvHandle, client: Client, name: str, rack_name: str, rule: str
) -> str:
    created = await cluster.create(api.TASKS, task(name, rack_name, rule))
    await cluster.wait_status(name, "Running")
    uid = str(created["metadata"]["uid"])
    await _visible(client, uid, WorkflowExecutionStatus.RUNNING)
    return uid


async def test_a_close_that_visibility_shows_late_reaches_the_task(
    cluster: Cluster, nicotask_system: DevEnvHandle, temporal_client: Client
) -> None:
    _server_only(nicotask_system)
    env = nicotask_system
    long_rule, short_rule = new_rule_id(), new_rule_id()
    await cluster.create(api.RULES, sleep_rule(long_rule, [300]))
    await cluster.create(api.RULES, sleep_rule(short_rule, [0.5]))
    for i in (1, 2):
        await cluster.create(api.RACKS, rack(f"rack-{i}", env.redfish_url, env.redfish_systems[:1]))
    uid = await _running_task(cluster, env, temporal_client, "late", "rack-1", long_rule)

    async with PsqlSession(env.env, VISIBILITY_DB) as db:
        await db.run("BEGIN;")
        assert len(await db.run(_lock(uid))) == 1
        # Someone terminates the workflow outside nicotask: the store has the close,
        # visibility does not.
        await temporal_client.get_workflow_handle(uid).terminate(reason="operator on call")
        desc = await temporal_client.get_workflow_handle(uid).describe()
        assert desc.status == WorkflowExecutionStatus.TERMINATED and desc.close_time
        # Another task closes later than the overlap, and visibility shows that one.
        await asyncio.sleep(OVERLAP.total_seconds() + 1)
        other = await _running_task(cluster, env, temporal_client, "other", "rack-2", short_rule)
        await cluster.wait_status("other", "Succeeded")
        other_closed = await _visible(temporal_client, other, WorkflowExecutionStatus.COMPLETED)
        assert other_closed is not None and other_closed - desc.close_time > OVERLAP
        # The follower's 1 s pass has read it (its watermark is now past it).
        await asyncio.sleep(3)
        assert await _visible_status(temporal_client, uid) == WorkflowExecutionStatus.RUNNING
        await db.run("COMMIT;")

    # Visibility now shows the close, with its own (old) close time.
    await _visible(temporal_client, uid, WorkflowExecutionStatus.TERMINATED, timeout=120)
    done = await cluster.wait_status("late", *TERMINAL, timeout=60)
    assert done["status"]["status"] == "Terminated"
    assert done["status"]["message"].startswith("Terminated outside nicotask")
    assert "running" not in str(done["status"]["report"])


async def test_a_workflow_that_ends_while_visibility_lags_reaches_the_task(
    cluster: Cluster, nicotask_system: DevEnvHandle, temporal_client: Client
) -> None:
    _server_only(nicotask_system)
    env = nicotask_system
    rule = new_rule_id()
    await cluster.create(api.RULES, sleep_rule(rule, [5]))
    await cluster.create(api.RACKS, rack("rack-1", env.redfish_url, env.redfish_systems[:1]))
    uid = await _running_task(cluster, env, temporal_client, "t1", "rack-1", rule)
    async with PsqlSession(env.env, VISIBILITY_DB) as db:
        await db.run("BEGIN;")
        assert len(await db.run(_lock(uid))) == 1
        done = await cluster.wait_status("t1", *TERMINAL, timeout=60)
        assert done["status"]["status"] == "Succeeded"
        assert await _visible_status(temporal_client, uid) == WorkflowExecutionStatus.RUNNING
        await db.run("COMMIT;")
    await _visible(temporal_client, uid, WorkflowExecutionStatus.COMPLETED, timeout=120)
