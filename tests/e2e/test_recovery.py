"""Crashes and outages: the operator killed mid-cancel, Temporal down during a cancel."""

from __future__ import annotations

import asyncio

import pytest
from e2e_support import (
    OPERATOR_SETTINGS,
    Cluster,
    condition,
)
from temporalio.client import Client, WorkflowExecutionStatus

from nicotask.lifecycle import CANCELLED_BY_USER
from nicotask_dev.devenv import system
from nicotask_dev.devenv.testing import DevEnvHandle


async def _running_task(cluster: Cluster, env: DevEnvHandle, name: str = "t1") -> str:
    created = await cluster.sleeping_task(env, name)
    await cluster.wait_status(name, "Running")
    return str(created["metadata"]["uid"])


async def test_operator_killed_between_terminate_and_status_write_converges(
    cluster: Cluster, nicotask_system: DevEnvHandle, temporal_client: Client
) -> None:
    uid = await _running_task(cluster, nicotask_system)
    env = nicotask_system.env
    env.kill_process("operator")
    try:
        # What the operator had done when it died: Temporal terminated the
        # workflow, spec.cancel is true, and the CR still says Running.
        await temporal_client.get_workflow_handle(uid).terminate(reason=CANCELLED_BY_USER)
        await cluster.cancel("t1")
        assert (await cluster.get_task("t1"))["status"]["status"] == "Running"
    finally:
        system.start_operator(env, **OPERATOR_SETTINGS)
    done = await cluster.wait_status("t1", "Terminated", "Failed", "Succeeded", timeout=60)
    assert done["status"]["status"] == "Terminated"
    assert done["status"]["message"] == CANCELLED_BY_USER
    assert "running" not in str(done["status"]["report"])


async def test_cancel_while_temporal_is_down_completes_when_it_is_back(
    cluster: Cluster, nicotask_system: DevEnvHandle, temporal_client: Client
) -> None:
    if "temporal" in nicotask_system.external:
        pytest.skip("Temporal is external (NICOTASK_TEMPORAL_ADDRESS): the test cannot stop it")
    uid = await _running_task(cluster, nicotask_system)
    with nicotask_system.env.stopped("temporal"):
        await cluster.cancel("t1")
        pending = await cluster.wait_task(
            "t1",
            lambda t: (condition(t, "CancelPending") or {}).get("status") == "True",
            30,
            "CancelPending condition",
        )
        # Never Terminated before Temporal confirmed it.
        await asyncio.sleep(3)
        assert (await cluster.get_task("t1"))["status"]["status"] == "Running"
        assert pending["status"]["cancelRequestedAt"]
    done = await cluster.wait_status("t1", "Terminated", "Failed", "Succeeded", timeout=90)
    assert done["status"]["status"] == "Terminated"
    assert condition(done, "CancelPending") is None
    desc = await temporal_client.get_workflow_handle(uid).describe()
    assert desc.status == WorkflowExecutionStatus.TERMINATED
