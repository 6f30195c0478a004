"""Graceful stop, cleanup and escalation through the real system (operator, worker,
Temporal, API server), with the Redfish emulator's request log as the witness.

Power changes take the emulator 1-11 s, so the Redfish-driven tests here are few; the
race and crash tests use Sleep steps (durable timers) and finish in seconds.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import httpx
import pytest
from e2e_support import (
    OPERATOR_SETTINGS,
    Cluster,
    condition,
    new_rule_id,
    rack,
    stage_statuses,
    status_of,
    task,
)
from temporalio.client import Client, WorkflowExecutionStatus
from test_cancel_redfish import _power as power_through_redfish

from nicotask import api
from nicotask.temporal.models import WorkflowOutcome
from nicotask_dev.devenv import system
from nicotask_dev.devenv.testing import DevEnvHandle

RESET = "Actions/ComputerSystem.Reset"
TERMINAL = api.FINISHED_STATUS_VALUES


# ---- the emulator's request log --------------------------------------------------


class RequestLog:
    """sushy-tools' access log: one line per request, in arrival order."""

    def __init__(self, env: DevEnvHandle) -> None:
        self.path = Path(env.env.record("redfish").log)
        self.ids = {s["id"]: s["name"] for s in env.redfish_systems}

    def lines(self) -> list[str]:
        return self.path.read_text(errors="replace").splitlines()

    def mark(self) -> int:
        return len(self.lines())

    def requests(self, since: int, *, resets_only: bool = False) -> list[tuple[str, str]]:
        """(component name, request line) of our systems' requests after line `since`."""
        out = []
        for line in self.lines()[since:]:
            if resets_only and not ("POST" in line and RESET in line):
                continue
            for sid, name in self.ids.items():
                if f"/Systems/{sid}" in line:
                    out.append((name, line))
        return out

    def resets(self, since: int) -> list[str]:
        return [name for name, _ in self.requests(since, resets_only=True)]


async def power_all(env: DevEnvHandle, names: list[str], reset: str, state: str) -> None:
    """Reset the named systems straight through Redfish; wait until all show `state`."""
    by_name = {s["name"]: s["id"] for s in env.redfish_systems}
    await power_through_redfish(env, [by_name[n] for n in names], reset, state)


async def power_states(env: DevEnvHandle, names: list[str]) -> dict[str, str]:
    by_name = {s["name"]: s["id"] for s in env.redfish_systems}
    auth = (env.redfish_user, env.redfish_password)
    async with httpx.AsyncClient(auth=auth, timeout=10) as http:
        return {
            n: (await http.get(f"{env.redfish_url}/redfish/v1/Systems/{by_name[n]}")).json()[
                "PowerState"
            ]
            for n in names
        }


# ---- the rule: the sample PowerOn's shape, without its settle times -----------------


def power_step(ctype: str, stage: int, power: str, state: str, **extra: Any) -> dict[str, Any]:
    return {
        "componentType": ctype,
        "stage": stage,
        "timeoutSeconds": 60,
        "retry": {"maxAttempts": 1},
        "action": {
            "type": "PowerControl",
            "power": power,
            "expectedState": state,
            "pollIntervalSeconds": 0.5,
        },
        **extra,
    }


def power_on_rule(rule_id: str, cleanup_parallel: int = 0) -> dict[str, Any]:
    return api.RULE_RESOURCE.manifest(
        f"power-on-{rule_id[:8]}",
        {
            "ruleId": rule_id,
            "operation": "PowerOn",
            "steps": [
                power_step("PowerShelf", 1, "On", "On"),
                power_step("NVSwitch", 2, "On", "On"),
                power_step("Compute", 3, "On", "On"),
            ],
            "cleanupTimeoutSeconds": 120,
            "cleanup": [
                power_step(
                    "Compute", 1, "ForceOff", "Off", targets="ActedOn", maxParallel=cleanup_parallel
                )
            ],
        },
    )


def names_of(env: DevEnvHandle, kind: str) -> list[str]:
    return [s["name"] for s in env.redfish_systems if s["type"] == kind]


async def graceful(cluster: Cluster, name: str, reason: str) -> None:
    await cluster.patch_task(
        name, {"spec": {"cancel": True, "cancelMode": "Graceful", "cancelReason": reason}}
    )


async def wait_reset_of(log: RequestLog, since: int, names: list[str], timeout: float = 60) -> None:
    for _ in range(int(timeout / 0.1)):
        if set(log.resets(since)) & set(names):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"no reset of {names} within {timeout}s")


async def nothing_after(log: RequestLog, seconds: float = 6.0) -> None:
    """No request of any kind reaches the emulator for our systems from now on."""
    mark = log.mark()
    await asyncio.sleep(seconds)
    assert log.requests(mark) == [], "a BMC request followed the task's end"


@pytest.fixture
async def redfish_rack(cluster: Cluster, nicotask_system: DevEnvHandle) -> tuple[str, list[str]]:
    """rack-1 with every emulated system, all Off, and a PowerOn rule with cleanup."""
    env = nicotask_system
    rule_id = new_rule_id()
    await cluster.create(api.RULES, power_on_rule(rule_id, cleanup_parallel=1))
    await cluster.create(api.RACKS, rack("rack-1", env.redfish_url, env.redfish_systems))
    everything = [s["name"] for s in env.redfish_systems]
    await power_all(env, everything, "ForceOff", "Off")
    return rule_id, everything


async def test_graceful_stop_in_stage_1_finishes_the_shelves_and_sends_nothing_else(
    cluster: Cluster, nicotask_system: DevEnvHandle, redfish_rack: tuple[str, list[str]]
) -> None:
    env = nicotask_system
    rule_id, everything = redfish_rack
    log = RequestLog(env)
    shelves = names_of(env, "powershelf")
    before = log.mark()
    await cluster.create(api.TASKS, task("power-on", "rack-1", rule_id))
    await wait_reset_of(log, before, shelves)
    await graceful(cluster, "power-on", "maintenance window closed")
    stopping = await cluster.wait_task(
        "power-on",
        lambda t: (
            (condition(t, "CancelPending") or {}).get("reason") == "StoppingGracefully"
            or status_of(t) in TERMINAL
        ),
        30,
        "StoppingGracefully",
    )
    done = await cluster.wait_status("power-on", *TERMINAL, timeout=90)
    await nothing_after(log)

    st = done["status"]
    assert st["status"] == "Terminated", st
    assert st["message"] == (
        "Cancelled by user: maintenance window closed; Stopped gracefully after stage 1,"
        " skipped stages 2, 3; cleanup had nothing to do"
    )
    assert st["cancelMode"] == "Graceful" and st["cancelReason"] == "maintenance window closed"
    assert stage_statuses(done) == ["completed", "skipped", "skipped", "skipped"]
    # Every shelf reached On; nothing else was ever asked.
    assert set(log.resets(before)) == set(shelves)
    assert set((await power_states(env, shelves)).values()) == {"On"}
    others = [n for n in everything if n not in shelves]
    assert set((await power_states(env, others)).values()) == {"Off"}
    if status_of(stopping) not in TERMINAL:
        await cluster.wait_event("power-on", "StoppingGracefully")


async def test_graceful_stop_in_stage_3_cleans_up_exactly_what_it_powered_on_then_escalation(
    cluster: Cluster, nicotask_system: DevEnvHandle, redfish_rack: tuple[str, list[str]]
) -> None:
    """Stopped in stage 3: every compute reaches On, then the cleanup forces off the
    computes this task powered on (not compute-0, On before the task), one at a time;
    a terminate in the middle of the cleanup makes its in-flight ForceOff the last reset."""
    env = nicotask_system
    rule_id, _ = redfish_rack
    log = RequestLog(env)
    computes = names_of(env, "compute")
    already_on = computes[0]
    await power_all(env, [already_on], "On", "On")
    before = log.mark()
    await cluster.create(api.TASKS, task("power-on", "rack-1", rule_id))
    await wait_reset_of(log, before, computes, timeout=90)
    await graceful(cluster, "power-on", "wrong rack")
    # The stage finishes (every compute On), then the cleanup's first ForceOff goes out.
    for _ in range(900):
        if len([n for n in log.resets(before) if n in computes]) > len(computes) - 1:
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("the cleanup sent no ForceOff")
    await cluster.patch_task("power-on", {"spec": {"cancelMode": "Terminate"}})
    done = await cluster.wait_status("power-on", *TERMINAL, timeout=30)
    await asyncio.sleep(1.5)  # a request already on the wire may still land
    settled = log.mark()
    # No reset follows the terminate. (The in-flight ForceOff's activity may read the
    # power state until its next heartbeat tells it the workflow is gone: docs/cancel.md.)
    await asyncio.sleep(6.0)
    assert log.resets(settled) == [], "a reset followed the terminate"

    st = done["status"]
    assert st["status"] == "Terminated", st
    assert st["message"] == "Cancelled by user: wrong rack (graceful stop escalated to Terminate)"
    resets = log.resets(before)
    ons = [n for n in resets if n in computes][: len(computes) - 1]
    offs = [n for n in resets if n in computes][len(computes) - 1 :]
    # Stage 3 powered on every compute but the one already On ...
    assert sorted(ons) == sorted(computes[1:]), resets
    # ... and the cleanup, one at a time, got exactly one ForceOff out before the terminate.
    assert len(offs) == 1 and offs[0] in computes[1:], resets
    report = st["report"]["stages"]
    assert [s["number"] for s in report] == [1, 2, 3, 101]
    assert [s["status"] for s in report][:3] == ["completed", "completed", "completed"]
    assert report[3]["status"] == "failed"  # cut off by the terminate, closed by the operator


# ---- races and crashes, on Sleep steps -------------------------------------------------


def sleep_cleanup_rule(rule_id: str, seconds: list[float], cleanup: float) -> dict[str, Any]:
    steps = [
        {
            "componentType": "Compute",
            "stage": i,
            "timeoutSeconds": 120,
            "retry": {"maxAttempts": 1},
            "action": {"type": "Sleep", "durationSeconds": s},
        }
        for i, s in enumerate(seconds, start=1)
    ]
    return api.RULE_RESOURCE.manifest(
        f"rule-{rule_id[:8]}",
        {
            "ruleId": rule_id,
            "operation": "PowerOn",
            "steps": steps,
            "cleanup": [
                {
                    "componentType": "Compute",
                    "stage": 1,
                    "targets": "All",
                    "timeoutSeconds": 120,
                    "action": {"type": "Sleep", "durationSeconds": cleanup},
                }
            ],
        },
    )


async def outcome_in_temporal(temporal_client: Client, uid: str) -> tuple[Any, WorkflowOutcome]:
    handle = temporal_client.get_workflow_handle(uid, result_type=WorkflowOutcome)
    status = (await handle.describe()).status
    return status, await handle.result()


RACE_RUNS = 50
RACKS = 10


async def race_round(
    cluster: Cluster, env: DevEnvHandle, temporal_client: Client, rule_id: str, runs: int
) -> dict[str, int]:
    """`runs` tasks on RACKS racks at once; each is cancelled gracefully at a random moment
    around the end of its last stage; the task's end must be what Temporal recorded."""
    rng = random.Random(20)
    outcomes: dict[str, int] = {}

    async def one(i: int) -> None:
        name = f"race-{i}"
        created = await cluster.create(api.TASKS, task(name, f"rack-{i % RACKS}", rule_id))
        await cluster.wait_status(name, "Running", *TERMINAL, timeout=120)
        # Around the end of its stages (0.4 s + 0.4 s): during stage 1 or 2, or after.
        await asyncio.sleep(rng.uniform(0.2, 2.0))
        await graceful(cluster, name, f"race {i}")
        done = await cluster.wait_status(name, *TERMINAL, timeout=120)
        await asyncio.sleep(0.3)
        final = await cluster.get_task(name)
        assert status_of(final) == status_of(done)  # terminal is final
        wf, outcome = await outcome_in_temporal(temporal_client, created["metadata"]["uid"])
        assert wf == WorkflowExecutionStatus.COMPLETED, (name, wf)
        assert status_of(final) == outcome.status.value, (name, final["status"], outcome)
        stages = stage_statuses(final)
        if outcome.status.value == "Succeeded":
            # Temporal recorded the completion first. When the task was already Succeeded
            # before the stop arrived (its final report has the operator read the outcome
            # at once), CancelIgnored comes with the stop, after the terminal status.
            final = await cluster.wait_task(
                name,
                lambda t: (condition(t, "CancelIgnored") or {}).get("status") == "True",
                30,
                "CancelIgnored",
            )
            assert status_of(final) == "Succeeded"
            assert stages == ["completed", "completed"], stages
        else:
            assert status_of(final) == "Terminated", final["status"]
            assert "running" not in stages and stages[-1] == "completed", stages
        key = f"{status_of(final)} {','.join(stages)}"
        outcomes[key] = outcomes.get(key, 0) + 1

    for first in range(0, runs, RACKS):
        await asyncio.gather(*(one(i) for i in range(first, min(runs, first + RACKS))))
    return outcomes


@pytest.fixture
async def sleep_racks(cluster: Cluster, nicotask_system: DevEnvHandle) -> str:
    rule_id = new_rule_id()
    await cluster.create(api.RULES, sleep_cleanup_rule(rule_id, [0.4, 0.4], 0.2))
    system_ = nicotask_system.redfish_systems[:1]
    for r in range(RACKS):
        await cluster.create(api.RACKS, rack(f"rack-{r}", nicotask_system.redfish_url, system_))
    return rule_id


async def test_graceful_stop_racing_completion_agrees_with_temporal(
    cluster: Cluster, nicotask_system: DevEnvHandle, temporal_client: Client, sleep_racks: str
) -> None:
    outcomes = await race_round(cluster, nicotask_system, temporal_client, sleep_racks, RACE_RUNS)
    print("graceful race outcomes:", outcomes)
    assert sum(outcomes.values()) == RACE_RUNS


@pytest.mark.slow
async def test_graceful_stop_racing_completion_many_runs(
    cluster: Cluster, nicotask_system: DevEnvHandle, temporal_client: Client, sleep_racks: str
) -> None:
    outcomes = await race_round(cluster, nicotask_system, temporal_client, sleep_racks, 300)
    print("graceful race outcomes (slow):", outcomes)


@pytest.mark.parametrize("kill_during", ["stage", "cleanup"])
async def test_operator_killed_during_a_graceful_stop_still_ends_it(
    cluster: Cluster, nicotask_system: DevEnvHandle, temporal_client: Client, kill_during: str
) -> None:
    env = nicotask_system
    rule_id = new_rule_id()
    await cluster.create(api.RULES, sleep_cleanup_rule(rule_id, [3.0, 3.0], 3.0))
    await cluster.create(api.RACKS, rack("rack-1", env.redfish_url, env.redfish_systems[:1]))
    await cluster.create(api.TASKS, task("t1", "rack-1", rule_id))
    await cluster.wait_task("t1", lambda t: stage_statuses(t)[:1] == ["running"], 30, "stage 1")
    await graceful(cluster, "t1", "crash test")
    await cluster.wait_task(
        "t1", lambda t: (t["status"].get("cancelMode")) == "Graceful", 30, "the request sent"
    )
    if kill_during == "cleanup":
        await cluster.wait_task(
            "t1", lambda t: "cleanup" in (t["status"].get("message") or ""), 30, "cleanup"
        )
    env.env.kill_process("operator")
    try:
        await asyncio.sleep(4.0)  # the workflow goes on, and may end, while no operator runs
        assert status_of(await cluster.get_task("t1")) == "Running"
    finally:
        system.start_operator(env.env, **OPERATOR_SETTINGS)
    done = await cluster.wait_status("t1", *TERMINAL, timeout=60)
    st = done["status"]
    assert st["status"] == "Terminated", st
    assert st["message"] == (
        "Cancelled by user: crash test; Stopped gracefully after stage 1, skipped stage 2;"
        " cleanup completed"
    )
    assert stage_statuses(done) == ["completed", "skipped", "completed"]
    wf, outcome = await outcome_in_temporal(temporal_client, done["metadata"]["uid"])
    assert wf == WorkflowExecutionStatus.COMPLETED and outcome.report.wire() == st["report"]


# ---- deadlines, through the operator ------------------------------------------------


async def test_a_task_past_its_not_after_never_starts_and_active_seconds_stop_one(
    cluster: Cluster, nicotask_system: DevEnvHandle, temporal_client: Client
) -> None:
    env = nicotask_system
    rule_id = new_rule_id()
    await cluster.create(api.RULES, sleep_cleanup_rule(rule_id, [2.0, 60.0], 0.2))
    await cluster.create(api.RACKS, rack("rack-1", env.redfish_url, env.redfish_systems[:1]))
    await cluster.create(api.RACKS, rack("rack-2", env.redfish_url, env.redfish_systems[:1]))
    # Created past its deadline: Failed, and no workflow ever starts.
    past = "2026-01-01T00:00:00Z"
    late = await cluster.create(
        api.TASKS, task("late", "rack-1", rule_id, deadline={"notAfter": past})
    )
    done = await cluster.wait_status("late", *TERMINAL, timeout=30)
    assert done["status"]["status"] == "Failed", done["status"]
    assert done["status"]["message"] == (
        "deadline ran out before the task started (notAfter 2026-01-01T00:00:00.000000Z)"
    )
    await cluster.wait_event("late", "DeadlineExceeded")
    with pytest.raises(Exception, match="not found"):
        await temporal_client.get_workflow_handle(late["metadata"]["uid"]).describe()
    # activeSeconds 4 in Terminate mode: stage 1 (2 s) completes, the deadline falls in
    # stage 2 (60 s), which is cut at once; the queue time before the start is free.
    await cluster.create(
        api.TASKS,
        task("slow", "rack-2", rule_id, deadline={"activeSeconds": 4, "stop": "Terminate"}),
    )
    done = await cluster.wait_status("slow", *TERMINAL, timeout=60)
    st = done["status"]
    assert st["status"] == "Failed", st
    assert st["message"] == "deadline ran out (activeSeconds 4): stopped at once, no cleanup"
    assert stage_statuses(done) == ["completed", "failed"]
