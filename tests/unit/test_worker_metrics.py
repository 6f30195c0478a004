"""The worker's own metrics: the metered BMC driver and the activity interceptor, recorded
on a real Temporal Runtime's metric buffer (no server needed)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.runtime import MetricBuffer, Runtime, TelemetryConfig
from temporalio.worker import ActivityInboundInterceptor, ExecuteActivityInput

from nicotask import logs
from nicotask.api import ActionType, PowerAction, PowerState
from nicotask.redfish import BmcUnreachable
from nicotask.temporal import metrics as wm


class FakeDriver:
    def __init__(self) -> None:
        self.fail = False

    def power_state(self, system_id: str | None) -> PowerState | None:
        if self.fail:
            raise BmcUnreachable("https://bmc", "BMC https://bmc unreachable: refused")
        return PowerState.ON

    def reset(self, system_id: str | None, action: PowerAction) -> None:
        return None

    def allowed_resets(self, system_id: str | None) -> set[PowerAction]:
        return {PowerAction.ON}


@pytest.fixture
def buffered() -> tuple[MetricBuffer, wm.WorkerMetrics]:
    buffer = MetricBuffer(10_000)
    runtime = Runtime(telemetry=TelemetryConfig(metrics=buffer))
    return buffer, wm.WorkerMetrics.of(runtime)


def updates(buffer: MetricBuffer, name: str) -> list[tuple[Any, dict[str, Any]]]:
    return [
        (u.value, {k: v for k, v in dict(u.attributes).items() if k != "service_name"})
        for u in buffer.retrieve_updates()
        if u.metric.name == name
    ]


def test_metered_driver_counts_by_action_and_outcome(
    buffered: tuple[MetricBuffer, wm.WorkerMetrics], caplog: pytest.LogCaptureFixture
) -> None:
    buffer, meters = buffered
    fake = FakeDriver()
    make = wm.metered_factory(lambda endpoint, user, password, verify: fake, meters)
    driver = make("https://bmc", "u", "p", True)
    caplog.set_level(logging.DEBUG, logger="nicotask.worker.bmc")
    caplog.handler.addFilter(logs.TaskFieldsFilter())  # as configure_logging installs it
    with logs.task_context("ns", "t1", "uid-1"):
        assert driver.power_state("1") == PowerState.ON
        driver.reset("1", PowerAction.FORCE_OFF)
        fake.fail = True
        with pytest.raises(BmcUnreachable):
            driver.power_state("1")
    got = updates(buffer, wm.BMC_REQUESTS)
    assert [a for _, a in got] == [
        {"action": "power_state", "outcome": "ok"},
        {"action": "reset_ForceOff", "outcome": "ok"},
        {"action": "power_state", "outcome": "unreachable"},
    ]
    # One line per request; the power request at INFO, the failure at WARNING.
    levels = [(r.levelname, r.getMessage().split(": ")[0]) for r in caplog.records]
    assert levels == [
        ("DEBUG", "BMC https://bmc power_state system=1"),
        ("INFO", "BMC https://bmc reset_ForceOff system=1"),
        ("WARNING", "BMC https://bmc power_state system=1"),
    ]
    assert {tuple(logs.task_fields(r).values()) for r in caplog.records} == {("ns", "t1", "uid-1")}


class _Step:
    def __init__(self, action_type: ActionType) -> None:
        self.task = type("Ref", (), {"namespace": "ns", "name": "t2", "uid": "uid-2"})()
        self.action = type("Action", (), {"type": action_type})()


class _Next(ActivityInboundInterceptor):
    def __init__(self, result: Any) -> None:
        self.result = result
        self.seen: logs.TaskRef | None = None

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        self.seen = logs.current_task()
        await asyncio.sleep(0)
        if isinstance(self.result, BaseException):
            raise self.result
        return self.result


async def test_interceptor_times_steps_and_sets_task_context(
    buffered: tuple[MetricBuffer, wm.WorkerMetrics],
) -> None:
    buffer, meters = buffered
    interceptor = wm.TaskActivityInterceptor(meters)
    ok = _Next("done")
    inbound = interceptor.intercept_activity(ok)
    step = ExecuteActivityInput(
        fn=lambda: None, args=[_Step(ActionType.SLEEP)], executor=None, headers={}
    )
    assert await inbound.execute_activity(step) == "done"
    assert ok.seen == logs.TaskRef("ns", "t2", "uid-2")
    assert logs.current_task() is None

    failing = _Next(ApplicationError("no answer", type="BmcUnreachable"))
    inbound = interceptor.intercept_activity(failing)
    power = ExecuteActivityInput(
        fn=lambda: None, args=[_Step(ActionType.POWER_CONTROL)], executor=None, headers={}
    )
    with pytest.raises(ApplicationError):
        await inbound.execute_activity(power)
    got = updates(buffer, wm.STEP_DURATION)
    assert [a for _, a in got] == [
        {"action_type": "Sleep", "outcome": "ok"},
        {"action_type": "PowerControl", "outcome": "BmcUnreachable"},
    ]
    assert all(v >= 0 for v, _ in got)


async def test_probe_reports_reachability() -> None:
    seen: list[bool] = []
    calls = 0

    async def check() -> None:
        nonlocal calls
        calls += 1
        if calls > 1:
            raise ConnectionError("down")

    two = asyncio.Event()

    def report(ok: bool) -> None:
        seen.append(ok)
        if len(seen) == 2:
            two.set()

    probe = asyncio.create_task(wm.probe_reachability(check, report, interval=0.01))
    await asyncio.wait_for(two.wait(), timeout=10)
    probe.cancel()
    assert seen[:2] == [True, False]
