"""NicoTask lifecycle through the real operator and worker processes.

Rules here use short Sleep steps, so no test waits on the emulated BMCs'
1-11 s power changes; the Redfish-driven cancel test is in test_cancel_redfish.py.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import sys
from pathlib import Path
from typing import Any

import pytest
from e2e_support import (
    OPERATOR_SETTINGS,
    Cluster,
    condition,
    new_rule_id,
    rack,
    sleep_rule,
    stage_statuses,
    status_of,
    task,
    workflow_status,
)
from temporalio.client import Client, WorkflowExecutionStatus

from nicotask import api
from nicotask_dev.devenv import system
from nicotask_dev.devenv.testing import DevEnvHandle, argocd_health

TERMINAL = api.FINISHED_STATUS_VALUES


def status_writers(task_obj: dict[str, Any]) -> set[str]:
    """The field managers of the status subresource: the API server names them after
    the writer's User-Agent (`nicotask-operator/0.1.0` -> `nicotask-operator`)."""
    return {
        m["manager"]
        for m in task_obj["metadata"].get("managedFields") or []
        if m.get("subresource") == "status"
    }


async def _setup(cluster: Cluster, env: DevEnvHandle, seconds: list[float]) -> str:
    rule_id = new_rule_id()
    await cluster.create(api.RULES, sleep_rule(rule_id, seconds))
    await cluster.create(api.RACKS, rack("rack-1", env.redfish_url, env.redfish_systems[:2]))
    return rule_id


async def _kubectl_nico(env: DevEnvHandle, *args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "kubectl-nico"),
        *args,
        env={**os.environ, "KUBECONFIG": str(env.kubeconfig)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    assert proc.returncode == 0, err.decode()
    return out.decode()


MICROSECOND_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


def assert_times_to_the_microsecond(st: dict[str, Any]) -> None:
    """Every time the operator and the worker write has the same (microsecond) form, so
    they compare as text too, and a task never finishes before it started."""
    times = {k: st.get(k) for k in ("created", "started", "updated", "finished")}
    for i, stage in enumerate(st["report"]["stages"]):
        times.update({f"stage {i} {k}": stage.get(k) for k in ("startedAt", "finishedAt")})
    written = {k: v for k, v in times.items() if v is not None}
    assert {k for k, v in written.items() if not MICROSECOND_TIME.match(v)} == set(), written
    assert st["created"] <= st["started"] <= st["updated"]
    assert st["started"] <= st.get("finished", st["started"])


async def test_full_lifecycle_to_succeeded(
    cluster: Cluster, nicotask_system: DevEnvHandle, temporal_client: Client
) -> None:
    rule_id = await _setup(cluster, nicotask_system, [0.5, 0.5])
    created = await cluster.create(
        api.TASKS, task("t1", "rack-1", rule_id, description="two stages")
    )
    uid = created["metadata"]["uid"]

    running = await cluster.wait_status("t1", "Running", "Succeeded")
    assert running["status"]["id"] == uid
    done = await cluster.wait_status("t1", "Succeeded", timeout=60)
    st = done["status"]
    assert st["message"] == "Succeeded"
    assert st["ruleId"] == rule_id
    assert st["workflowId"] == uid and st["runId"]
    assert st["started"] and st["finished"] and st["created"] and st["updated"]
    assert stage_statuses(done) == ["completed", "completed"]
    for stage in st["report"]["stages"]:
        assert stage["startedAt"] and stage["finishedAt"]
        assert [s["status"] for s in stage["steps"]] == ["completed"]
    assert (condition(done, "Ready") or {}).get("status") == "True"
    assert (condition(done, "Reconciling") or {}).get("status") == "False"
    assert st["observedGeneration"] == done["metadata"]["generation"]
    # The operator writes no spec and no metadata: no finalizer, no kopf bookkeeping.
    assert not done["metadata"].get("finalizers")
    assert not any(
        k.startswith("kopf.zalando.org") for k in done["metadata"].get("annotations", {})
    )
    assert "kopf" not in st
    assert_times_to_the_microsecond(st)
    # the operator admitted it (Pending), the worker wrote its progress and the end
    assert status_writers(done) == {"nicotask-operator", "nicotask-worker"}
    assert await workflow_status(temporal_client, uid) == WorkflowExecutionStatus.COMPLETED
    await cluster.wait_event("t1", "Started")
    await cluster.wait_event("t1", "Succeeded")


async def test_cancel_while_running_mid_stage(
    cluster: Cluster, nicotask_system: DevEnvHandle, temporal_client: Client
) -> None:
    rule_id = await _setup(cluster, nicotask_system, [0.2, 60, 0.2])
    created = await cluster.create(api.TASKS, task("t1", "rack-1", rule_id))
    uid = created["metadata"]["uid"]
    running = await cluster.wait_task(
        "t1", lambda t: stage_statuses(t)[1:2] == ["running"], 60, "stage 2 running"
    )
    assert_times_to_the_microsecond(running["status"])  # as the worker's progress wrote them
    await cluster.cancel("t1")
    done = await cluster.wait_status("t1", *TERMINAL, timeout=30)
    st = done["status"]
    assert st["status"] == "Terminated" and st["message"] == "Cancelled by user"
    assert st["finished"]
    s1, s2, s3 = st["report"]["stages"]
    assert s1["status"] == "completed"
    assert s2["status"] == "failed" and s2["error"] == "Cancelled by user" and s2["finishedAt"]
    assert s2["steps"][0]["status"] == "failed" and s2["steps"][0]["error"] == "Cancelled by user"
    assert s3["status"] == "pending" and s3["steps"][0]["status"] == "pending"
    assert "running" not in str(st["report"])
    assert "nicotask-operator" in status_writers(done)  # the cancel's final write
    # The bug this guards: a cancel wrote `finished` to the second, before `started`.
    assert_times_to_the_microsecond(st)
    assert await workflow_status(temporal_client, uid) == WorkflowExecutionStatus.TERMINATED
    assert condition(done, "CancelPending") is None
    await cluster.wait_event("t1", "Cancelled")

    # What users read of this real task: `kubectl nico report` and Argo CD's health.
    report = await _kubectl_nico(nicotask_system, "report", "t1", "-n", cluster.ns)
    assert "Terminated" in report and "Cancelled by user" in report
    step_rows = [line.split() for line in report.splitlines() if line.split()[:1] == ["Compute"]]
    assert [r[1] for r in step_rows] == ["completed", "failed", "pending"], report
    health, why = argocd_health(done)
    assert health == "Healthy" and "Cancelled by user" in why


async def test_cancel_before_the_workflow_starts(
    cluster: Cluster, nicotask_system: DevEnvHandle, temporal_client: Client
) -> None:
    rule_id = await _setup(cluster, nicotask_system, [0.2])
    created = await cluster.create(api.TASKS, task("t1", "rack-1", rule_id, cancel=True))
    done = await cluster.wait_status("t1", *TERMINAL, timeout=30)
    assert done["status"]["status"] == "Terminated"
    assert done["status"]["message"] == "Cancelled by user"
    # It never started, and never will.
    await asyncio.sleep(3)
    assert await workflow_status(temporal_client, created["metadata"]["uid"]) is None
    assert status_of(await cluster.get_task("t1")) == "Terminated"


async def test_queue_cancel_waiting_then_promotion_and_limit(
    cluster: Cluster, nicotask_system: DevEnvHandle, temporal_client: Client
) -> None:
    rule_id = await _setup(cluster, nicotask_system, [60])
    await cluster.create(api.TASKS, task("first", "rack-1", rule_id))
    await cluster.wait_status("first", "Running")
    second = await cluster.create(api.TASKS, task("second", "rack-1", rule_id))
    waiting = await cluster.wait_status("second", "Waiting")
    assert waiting["status"]["message"] == "Queued: waiting for rack to become available"
    third = await cluster.create(api.TASKS, task("third", "rack-1", rule_id))
    await cluster.wait_status("third", "Waiting")
    # Queue limit is 2 in these tests: a fourth is refused.
    await cluster.create(api.TASKS, task("fourth", "rack-1", rule_id))
    refused = await cluster.wait_status("fourth", "Failed")
    assert refused["status"]["message"] == "rack rack-1 already has a conflicting task"

    # Cancel of a Waiting task: it leaves the queue and never gets a workflow.
    await cluster.cancel("second")
    cancelled = await cluster.wait_status("second", "Terminated")
    assert cancelled["status"]["message"] == "Cancelled by user"
    assert await workflow_status(temporal_client, second["metadata"]["uid"]) is None

    # Freeing the rack promotes the next in line (FIFO).
    await cluster.cancel("first")
    await cluster.wait_status("first", "Terminated")
    promoted = await cluster.wait_status("third", "Pending", "Running", timeout=30)
    assert promoted["status"]["runId"]
    assert await workflow_status(temporal_client, third["metadata"]["uid"]) is not None
    await cluster.cancel("third")
    await cluster.wait_status("third", "Terminated")


async def test_waiting_task_expires(cluster: Cluster, nicotask_system: DevEnvHandle) -> None:
    rule_id = await _setup(cluster, nicotask_system, [120])
    await cluster.create(api.TASKS, task("holder", "rack-1", rule_id))
    await cluster.wait_status("holder", "Running")
    await cluster.create(api.TASKS, task("late", "rack-1", rule_id))
    await cluster.wait_status("late", "Waiting")
    expired = await cluster.wait_status("late", *TERMINAL, timeout=45)
    assert expired["status"]["status"] == "Terminated"
    assert expired["status"]["message"] == "Expired: queue timeout reached"
    await cluster.cancel("holder")
    await cluster.wait_status("holder", "Terminated")


async def test_cancel_twice_terminates_once(
    cluster: Cluster, nicotask_system: DevEnvHandle
) -> None:
    rule_id = await _setup(cluster, nicotask_system, [60])
    await cluster.create(api.TASKS, task("t1", "rack-1", rule_id))
    await cluster.wait_status("t1", "Running")
    await asyncio.gather(cluster.cancel("t1"), cluster.cancel("t1"))
    await cluster.cancel("t1")
    done = await cluster.wait_status("t1", "Terminated")
    finished = done["status"]["finished"]
    await asyncio.sleep(2)
    again = await cluster.get_task("t1")
    assert again["status"]["finished"] == finished
    await cluster.wait_event("t1", "Cancelled")
    cancelled_events = [e for e in await cluster.events("t1") if e.reason == "Cancelled"]
    assert len(cancelled_events) == 1


async def test_cancel_after_success_is_ignored(
    cluster: Cluster, nicotask_system: DevEnvHandle
) -> None:
    rule_id = await _setup(cluster, nicotask_system, [0.2])
    await cluster.create(api.TASKS, task("t1", "rack-1", rule_id))
    done = await cluster.wait_status("t1", "Succeeded")
    await cluster.cancel("t1")
    ignored = await cluster.wait_task(
        "t1", lambda t: condition(t, "CancelIgnored") is not None, 20, "CancelIgnored"
    )
    assert ignored["status"]["status"] == "Succeeded"
    assert ignored["status"]["finished"] == done["status"]["finished"]
    assert ignored["status"]["report"] == done["status"]["report"]
    assert (
        "cannot be cancelled (status: Succeeded)"
        in (condition(ignored, "CancelIgnored") or {})["message"]
    )
    await cluster.wait_event("t1", "CancelIgnored")


async def test_cancel_racing_completion_agrees_with_temporal(
    cluster: Cluster, nicotask_system: DevEnvHandle, temporal_client: Client
) -> None:
    rule_id = await _setup(cluster, nicotask_system, [0.6])
    outcomes: dict[str, int] = {}
    rng = random.Random(7)
    for i in range(8):
        name = f"race-{i}"
        created = await cluster.create(api.TASKS, task(name, "rack-1", rule_id))
        await cluster.wait_status(name, "Running", "Succeeded")
        await asyncio.sleep(rng.uniform(0.2, 1.0))
        await cluster.cancel(name)
        done = await cluster.wait_status(name, *TERMINAL, timeout=30)
        # Settle: nothing may change a terminal status afterwards.
        await asyncio.sleep(0.5)
        final = status_of(await cluster.get_task(name))
        assert final == status_of(done)
        wf = await workflow_status(temporal_client, created["metadata"]["uid"])
        expected = {
            WorkflowExecutionStatus.COMPLETED: "Succeeded",
            WorkflowExecutionStatus.TERMINATED: "Terminated",
        }
        assert wf in expected, wf
        assert final == expected[wf], (name, final, wf)
        outcomes[final or ""] = outcomes.get(final or "", 0) + 1
    print("race outcomes:", outcomes)


async def test_bad_references_fail_with_a_clear_message(
    cluster: Cluster, nicotask_system: DevEnvHandle
) -> None:
    await cluster.create(api.TASKS, task("no-rack", "missing-rack"))
    failed = await cluster.wait_status("no-rack", "Failed")
    assert (
        failed["status"]["message"] == f"NicoRack missing-rack not found in namespace {cluster.ns}"
    )

    await cluster.create(api.RACKS, rack("rack-1", nicotask_system.redfish_url, []))
    pinned = "123e4567-e89b-12d3-a456-426614174000"
    await cluster.create(api.TASKS, task("no-rule", "rack-1", pinned))
    failed = await cluster.wait_status("no-rule", "Failed")
    assert pinned in failed["status"]["message"]
    assert (condition(failed, "Stalled") or {}).get("status") == "True"


async def test_delete_running_task_terminates_its_workflow(
    cluster: Cluster, nicotask_system: DevEnvHandle, temporal_client: Client
) -> None:
    rule_id = await _setup(cluster, nicotask_system, [60])
    created = await cluster.create(api.TASKS, task("t1", "rack-1", rule_id))
    await cluster.wait_status("t1", "Running")
    await cluster.delete_task("t1")
    for _ in range(100):
        try:
            await cluster.get_task("t1")
        except Exception:
            break
        await asyncio.sleep(0.2)
    else:
        pytest.fail("NicoTask was not deleted")
    # No finalizer: the delete returns at once, and the operator, seeing it in its
    # watch, terminates the workflow right after.
    uid = created["metadata"]["uid"]
    for _ in range(100):
        if await workflow_status(temporal_client, uid) == WorkflowExecutionStatus.TERMINATED:
            break
        await asyncio.sleep(0.1)
    else:
        pytest.fail("the deleted task's workflow was not terminated")


async def test_drift_terminated_outside_nicotask_and_task_timeout(
    cluster: Cluster, nicotask_system: DevEnvHandle, temporal_client: Client
) -> None:
    rule_id = await _setup(cluster, nicotask_system, [120])
    created = await cluster.create(api.TASKS, task("outside", "rack-1", rule_id))
    await cluster.wait_status("outside", "Running")
    # Someone terminates the workflow with the Temporal CLI, not through nicotask.
    await temporal_client.get_workflow_handle(created["metadata"]["uid"]).terminate(
        reason="operator on call"
    )
    drifted = await cluster.wait_status("outside", *TERMINAL, timeout=30)
    assert drifted["status"]["status"] == "Terminated"
    assert drifted["status"]["message"].startswith("Terminated outside nicotask")
    assert "running" not in str(drifted["status"]["report"])

    # A rule whose whole-task timeout runs out mid-stage: Failed, saying so.
    short = new_rule_id()
    body = sleep_rule(short, [120])
    body["metadata"]["name"] = "short-timeout"
    body["spec"]["workflowTimeoutSeconds"] = 20
    await cluster.create(api.RULES, body)
    await cluster.create(api.TASKS, task("slow", "rack-1", short))
    failed = await cluster.wait_status("slow", *TERMINAL, timeout=60)
    assert failed["status"]["status"] == "Failed"
    assert "timed out" in failed["status"]["message"]
    assert stage_statuses(failed) == ["failed"]


async def test_finished_task_is_deleted_after_its_ttl(
    cluster: Cluster, nicotask_system: DevEnvHandle
) -> None:
    rule_id = await _setup(cluster, nicotask_system, [0.2])
    await cluster.create(api.TASKS, task("keep", "rack-1", rule_id))
    await cluster.wait_status("keep", "Succeeded")
    await cluster.create(api.TASKS, task("short", "rack-1", rule_id, ttlSecondsAfterFinished=1))
    # The TTL counts from status.finished (the workflow's end), so the task may be
    # gone as soon as the operator writes Succeeded: the Event says it finished.
    await cluster.wait_event("short", "Succeeded", timeout=60)
    for _ in range(100):
        try:
            await cluster.get_task("short")
        except Exception:
            break
        await asyncio.sleep(0.2)
    else:
        pytest.fail("the task with ttlSecondsAfterFinished: 1 was not deleted")
    # Without a TTL (and no operator default) a finished task stays.
    assert status_of(await cluster.get_task("keep")) == "Succeeded"


async def test_task_deleted_while_the_operator_is_down_has_its_workflow_stopped(
    cluster: Cluster, nicotask_system: DevEnvHandle, temporal_client: Client
) -> None:
    rule_id = await _setup(cluster, nicotask_system, [120])
    created = await cluster.create(api.TASKS, task("t1", "rack-1", rule_id))
    await cluster.wait_status("t1", "Running")
    env = nicotask_system.env
    env.kill_process("operator")
    try:
        # No finalizer: the delete is not blocked by the operator being down.
        await cluster.delete_task("t1")
        with pytest.raises(Exception):  # noqa: B017 - any "not found" from the client
            await cluster.get_task("t1")
    finally:
        system.start_operator(env, **OPERATOR_SETTINGS)
    uid = created["metadata"]["uid"]
    for _ in range(150):
        if await workflow_status(temporal_client, uid) == WorkflowExecutionStatus.TERMINATED:
            break
        await asyncio.sleep(0.2)
    else:
        pytest.fail("the deleted task's workflow was not terminated after the restart")
