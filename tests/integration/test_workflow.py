"""NicoTaskWorkflow against the real Temporal dev server, with fake BMCs and a fake CR store.

The workflow and the real TaskActivities run in an in-process Worker on a
unique task queue. The BMCs are an in-memory fake (injected driver factory)
so failures, retries and concurrency can be chosen per component; the CR
store is an in-memory stand-in for Kube that applies the same decision as
the real writer and keeps every report it was given.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import importlib.abc
import io
import itertools
import logging
import sys
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonpatch
import pytest
from temporalio.client import Client, WorkflowHandle, WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from nicotask import api
from nicotask.api import (
    BMC_CREDENTIALS_LABEL,
    ActionType,
    ComponentType,
    NicoOperationRuleSpec,
    NicoRack,
    NicoTask,
    NicoTaskStatus,
    Operation,
    PowerAction,
    PowerState,
    ReportStatus,
    RetryPolicy,
    RuleStep,
    SecretRef,
    StepAction,
    TaskReportV1,
    TaskReportV1Stage,
    TaskReportV1Step,
    TaskStatus,
)
from nicotask.kube import NotFound, Refused, SecretData
from nicotask.lifecycle import allowed_transition, is_terminal, with_status
from nicotask.logs import TaskFieldsFilter
from nicotask.redfish import BmcError, BmcUnreachable
from nicotask.temporal.activities import TaskActivities
from nicotask.temporal.models import (
    WORKFLOW_NAME,
    ComponentTarget,
    TaskRef,
    WorkflowInput,
    WorkflowOutcome,
)
from nicotask.temporal.worker import build_worker
from nicotask.temporal.workflows import NicoTaskWorkflow

SITE = "660e8400-e29b-41d4-a716-446655440000"


# --------------------------------------------------------------------------
# Fakes
# --------------------------------------------------------------------------


class FakeStore:
    """In-memory NicoTask, NicoRack and Secret, with the API server's write rules.

    The status JSON patch is refused like the CRD's CEL rules refuse it (a
    terminal status is final, reportSequence never decreases) and like its
    uid test op fails on another object, as the real API server does
    (test_progress_write.py).
    """

    def __init__(self, uid: str, *, broken: bool = False) -> None:
        self.task = NicoTask.model_validate(
            {
                "metadata": {
                    "name": "task",
                    "namespace": "ns",
                    "uid": uid,
                    "generation": 1,
                    "creationTimestamp": "2026-01-01T00:00:00Z",
                },
                "spec": {"siteId": SITE, "rackRef": "rack", "operation": "PowerOn"},
            }
        )
        # As the operator leaves it when it starts the workflow (with its conditions).
        pending = with_status(self.task, TaskStatus.PENDING, "Pending")
        self.task = self.task.model_copy(update={"status": pending})
        self.rack = NicoRack.model_validate(
            {
                "metadata": {"name": "rack", "namespace": "ns"},
                "spec": {
                    "siteId": SITE,
                    "credentials": {"name": "bmc"},
                    "tls": {"allowInsecureHttp": True},
                    "components": [
                        {
                            "id": t.id,
                            "type": t.type.value,
                            "redfish": {"endpoint": t.endpoint, "systemId": t.system_id},
                        }
                        for t in ALL_TARGETS
                    ],
                },
            }
        )
        self.reports: list[TaskReportV1] = []
        self.statuses: list[NicoTaskStatus] = []
        self.rules: list[dict[str, Any]] = []
        self.broken = broken
        self.calls = 0
        self.reads = 0

    async def get_task(self, namespace: str, name: str) -> NicoTask:
        self.reads += 1
        return self.task

    async def get_rack(self, namespace: str, name: str) -> NicoRack:
        self.reads += 1
        return self.rack

    async def list_objects(self, plural: str, namespace: str | None = None) -> list[Any]:
        assert plural == api.RULES, plural
        self.reads += 1
        return self.rules

    def pin_rule(self, spec: NicoOperationRuleSpec) -> None:
        """The task pins `spec`, stored as a NicoOperationRule (the worker checks steps)."""
        body = spec.model_dump(by_alias=True, mode="json", exclude_none=True)
        self.rules = [api.RULE_RESOURCE.manifest("rule", body, namespace="ns")]
        task_spec = self.task.spec.model_copy(update={"rule_id": spec.rule_id})
        self.task = self.task.model_copy(update={"spec": task_spec})

    def set_spec(self, **fields: Any) -> None:
        """Change the stored task's spec (as a user's patch would)."""
        self.task = self.task.model_copy(update={"spec": self.task.spec.model_copy(update=fields)})

    async def read_secret_data(self, namespace: str, name: str) -> SecretData:
        self.reads += 1
        if name != "bmc":
            raise NotFound(f"secret {namespace}/{name}")
        return SecretData(
            labels={BMC_CREDENTIALS_LABEL: "true"},
            data={"username": "admin", "password": "password"},
        )

    async def json_patch_task_status(
        self, namespace: str, name: str, ops: list[dict[str, Any]]
    ) -> None:
        self.calls += 1
        if self.broken:
            raise RuntimeError("apiserver unavailable")
        first = ops[0]
        assert first == {"op": "test", "path": "/metadata/uid", "value": first["value"]}
        old = self.task.status
        doc = {"metadata": {"uid": self.task.metadata.uid}, "status": old.wire()}
        try:
            body = jsonpatch.apply_patch(doc, ops)["status"]
        except (jsonpatch.JsonPatchTestFailed, jsonpatch.JsonPatchConflict) as exc:
            raise Refused(str(exc)) from exc
        new = NicoTaskStatus.model_validate({k: v for k, v in body.items() if v is not None})
        if is_terminal(old.status) and new.status != old.status:
            raise Refused("status.status is terminal")
        if (old.report_sequence or 0) > (new.report_sequence or 0):
            raise Refused("status.reportSequence cannot decrease")
        self.task = self.task.model_copy(update={"status": new})
        self.statuses.append(new)
        if new.report is not None:
            self.reports.append(new.report)

    async def update_task_status(
        self,
        namespace: str,
        name: str,
        decide: Callable[[NicoTask], NicoTaskStatus | None],
        *,
        uid: str | None = None,
        attempts: int = 20,
        current: NicoTask | None = None,
    ) -> tuple[NicoTask, bool]:
        self.calls += 1
        new = decide(self.task)
        if new is None or not allowed_transition(self.task.status.status, new.status):
            return self.task, False
        self.task = self.task.model_copy(update={"status": new})
        self.statuses.append(new)
        if new.report is not None:
            self.reports.append(new.report)
        return self.task, True


class FakeBmcs:
    """Every component's BMC in memory. Driver calls run in worker threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.power: dict[str, PowerState] = defaultdict(lambda: PowerState.OFF)
        self.fail: dict[str, Exception] = {}  # component id -> error raised by power_state
        self.fail_times: dict[str, int] = {}  # fail only the first N attempts
        self.fail_delay: dict[str, float] = {}  # seconds before the failure is raised
        self.state_calls: dict[str, int] = defaultdict(int)
        self.resets: list[tuple[str, PowerAction]] = []  # done, in order
        self.asked: list[tuple[str, PowerAction, float]] = []  # sent (monotonic time)
        self.reset_delay = 0.0
        self.apply_resets = True
        self.active = 0
        self.max_active = 0
        self.request_times: list[float] = []

    def __call__(self, endpoint: str, username: str, password: str, verify: bool | str) -> Any:
        assert (username, password) == ("admin", "password")
        return FakeDriver(self)


class FakeDriver:
    def __init__(self, bmcs: FakeBmcs) -> None:
        self.bmcs = bmcs

    def power_state(self, system_id: str | None) -> PowerState | None:
        b = self.bmcs
        assert system_id is not None
        with b.lock:
            b.request_times.append(time.monotonic())
            b.state_calls[system_id] += 1
            calls = b.state_calls[system_id]
            error = b.fail.get(system_id)
            limit = b.fail_times.get(system_id)
        if error is not None and (limit is None or calls <= limit):
            time.sleep(b.fail_delay.get(system_id, 0.0))
            raise error
        return b.power[system_id]

    def allowed_resets(self, system_id: str | None) -> set[PowerAction]:
        return {PowerAction.ON, PowerAction.FORCE_OFF}

    def reset(self, system_id: str | None, action: PowerAction) -> None:
        b = self.bmcs
        assert system_id is not None
        with b.lock:
            b.request_times.append(time.monotonic())
            b.asked.append((system_id, action, time.monotonic()))
            b.active += 1
            b.max_active = max(b.max_active, b.active)
        try:
            if b.reset_delay:
                time.sleep(b.reset_delay)
            with b.lock:
                b.resets.append((system_id, action))
                if b.apply_resets:
                    b.power[system_id] = (
                        PowerState.ON if action == PowerAction.ON else PowerState.OFF
                    )
        finally:
            with b.lock:
                b.active -= 1


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------


def target(cid: str, ctype: ComponentType, host: int = 1) -> ComponentTarget:
    # TEST-NET-1 addresses: allowed by the default endpoint policy, never resolved.
    return ComponentTarget(
        id=cid,
        type=ctype,
        endpoint=f"http://192.0.2.{host}",
        system_id=cid,
        credentials_secret=SecretRef(name="bmc"),
    )


RACK = (
    [target(f"compute-{i}", ComponentType.COMPUTE) for i in range(4)]
    + [target(f"nvswitch-{i}", ComponentType.NVSWITCH) for i in range(2)]
    + [target(f"powershelf-{i}", ComponentType.POWER_SHELF) for i in range(2)]
)
# The stored rack: every component any test names.
ALL_TARGETS = RACK + [target(f"compute-{i}", ComponentType.COMPUTE) for i in range(4, 6)]


def sleep_action(seconds: float) -> StepAction:
    return StepAction(type=ActionType.SLEEP, duration_seconds=seconds)


def power_on(expected: bool = True, poll: float = 0.1) -> StepAction:
    return StepAction(
        type=ActionType.POWER_CONTROL,
        power=PowerAction.ON,
        expected_state=PowerState.ON if expected else None,
        poll_interval_seconds=poll,
    )


def step(
    ctype: ComponentType,
    stage: int,
    action: StepAction,
    *,
    timeout: float = 30.0,
    attempts: int = 1,
    max_parallel: int = 0,
) -> RuleStep:
    return RuleStep(
        component_type=ctype,
        stage=stage,
        max_parallel=max_parallel,
        timeout_seconds=timeout,
        retry=RetryPolicy(
            max_attempts=attempts,
            initial_interval_seconds=0.1,
            backoff_coefficient=1.0,
            max_interval_seconds=0.2,
        ),
        action=action,
    )


def rule(*steps: RuleStep, timeout: float = 300.0) -> NicoOperationRuleSpec:
    return NicoOperationRuleSpec(
        rule_id=str(uuid.uuid4()),
        operation=Operation.POWER_ON,
        workflow_timeout_seconds=timeout,
        steps=list(steps),
    )


def workflow_input(
    uid: str,
    spec: NicoOperationRuleSpec,
    components: list[ComponentTarget] | None = None,
    deadline: api.TaskDeadline | None = None,
) -> WorkflowInput:
    return WorkflowInput(
        task=TaskRef(namespace="ns", name="task", uid=uid),
        operation=spec.operation,
        rule_id=spec.rule_id,
        rule=spec,
        components=list(RACK if components is None else components),
        workflow_timeout_seconds=spec.workflow_timeout_seconds,
        deadline=deadline,
    )


class Harness:
    def __init__(self, client: Client, *, broken_store: bool = False) -> None:
        self.client = client
        self.uid = str(uuid.uuid4())
        self.queue = f"test-wf-{uuid.uuid4().hex[:10]}"
        self.store = FakeStore(self.uid, broken=broken_store)
        self.bmcs = FakeBmcs()

    def worker(self) -> Any:
        acts = TaskActivities(self.store, self.bmcs)
        return build_worker(self.client, self.store, task_queue=self.queue, activities=acts)

    async def start(
        self,
        spec: NicoOperationRuleSpec,
        execution_timeout: dt.timedelta = dt.timedelta(minutes=5),
        **kw: Any,
    ) -> WorkflowHandle[Any, Any]:
        self.store.pin_rule(spec)
        if kw.get("deadline") is not None:
            self.store.set_spec(deadline=kw["deadline"])
        return await self.client.start_workflow(
            WORKFLOW_NAME,
            workflow_input(self.uid, spec, **kw),
            id=self.uid,
            task_queue=self.queue,
            result_type=WorkflowOutcome,
            execution_timeout=execution_timeout,
        )

    async def run(
        self,
        spec: NicoOperationRuleSpec,
        execution_timeout: dt.timedelta = dt.timedelta(minutes=5),
        **kw: Any,
    ) -> WorkflowOutcome:
        async with self.worker():
            handle = await self.start(spec, execution_timeout, **kw)
            outcome = await asyncio.wait_for(handle.result(), timeout=120)
        assert isinstance(outcome, WorkflowOutcome)
        # Determinism: the recorded history replays without a nondeterminism error.
        replayer = Replayer(workflows=[NicoTaskWorkflow], data_converter=pydantic_data_converter)
        await replayer.replay_workflow(await handle.fetch_history())
        return outcome


def stage_statuses(report: TaskReportV1) -> list[str]:
    return [s.status.value for s in report.stages]


def check_timestamps(report: TaskReportV1) -> None:
    """startedAt once out of pending (not skipped), finishedAt once terminal."""
    for stage in report.stages:
        items: list[TaskReportV1Stage | TaskReportV1Step] = [stage, *stage.steps]
        for item in items:
            if item.status in (ReportStatus.PENDING, ReportStatus.SKIPPED):
                assert item.started_at is None and item.finished_at is None, item
            elif item.status == ReportStatus.RUNNING:
                assert item.started_at is not None and item.finished_at is None, item
            else:
                assert item.started_at is not None and item.finished_at is not None, item
                assert item.started_at <= item.finished_at


pytestmark = pytest.mark.asyncio(loop_scope="session")


# --------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------


async def test_success_runs_stages_in_order_and_publishes_progress(pclient: Client) -> None:
    h = Harness(pclient)
    spec = rule(
        step(ComponentType.POWER_SHELF, 1, power_on()),
        step(ComponentType.NVSWITCH, 2, power_on()),
        step(ComponentType.COMPUTE, 3, power_on()),
        step(ComponentType.COMPUTE, 4, sleep_action(0.2)),
    )
    outcome = await h.run(spec)

    assert outcome.status == TaskStatus.SUCCEEDED
    assert outcome.message == "Succeeded"
    assert stage_statuses(outcome.report) == ["completed"] * 4
    assert outcome.report.error is None
    assert [s.total_components for st in outcome.report.stages for s in st.steps] == [2, 2, 4, 4]
    check_timestamps(outcome.report)
    stages = outcome.report.stages
    for earlier, later in itertools.pairwise(stages):
        assert earlier.finished_at is not None and later.started_at is not None
        assert earlier.finished_at <= later.started_at
    assert outcome.started is not None and outcome.finished is not None

    # Power order follows the stages: shelves, then switches, then compute.
    order = [cid.split("-")[0] for cid, _ in h.bmcs.resets]
    assert order == ["powershelf"] * 2 + ["nvswitch"] * 2 + ["compute"] * 4
    assert all(h.bmcs.power[t.id] == PowerState.ON for t in RACK)

    # The CR saw: the whole plan with the first stage running in the first write,
    # then progress, and the final report last, always with status Running
    # (terminal statuses are the operator's).
    reports = h.store.reports
    assert len(reports) >= 2
    assert stage_statuses(reports[0]) == ["running"] + ["pending"] * 3
    assert reports[-1] == outcome.report
    assert all(s.status == TaskStatus.RUNNING for s in h.store.statuses)
    assert h.store.task.status.message == "Running"
    assert h.store.task.status.started is not None
    for snapshot in reports:
        check_timestamps(snapshot)


async def test_failing_step_retries_then_fails(pclient: Client) -> None:
    h = Harness(pclient)
    h.bmcs.fail["compute-1"] = BmcError("http://bmc-compute-1.invalid", "BMC says no")
    spec = rule(
        step(ComponentType.POWER_SHELF, 1, power_on(expected=False)),
        step(ComponentType.COMPUTE, 2, power_on(expected=False), attempts=3),
        step(ComponentType.NVSWITCH, 3, power_on(expected=False)),
    )
    outcome = await h.run(spec)

    assert outcome.status == TaskStatus.FAILED
    assert h.bmcs.state_calls["compute-1"] == 3  # three attempts, then give up
    assert outcome.message.startswith("Compute compute-1: BMC says no")
    assert "gave up after 3 attempts" in outcome.message
    assert len(outcome.message.encode()) <= 512
    assert stage_statuses(outcome.report) == ["completed", "failed", "pending"]
    assert outcome.report.error == outcome.message
    assert outcome.report.stages[1].error == outcome.message
    assert outcome.report.stages[1].steps[0].error == outcome.message
    check_timestamps(outcome.report)
    assert h.store.reports[-1] == outcome.report


async def test_retry_recovers(pclient: Client) -> None:
    h = Harness(pclient)
    h.bmcs.fail["compute-2"] = BmcUnreachable("http://x", "BMC http://x unreachable: flaky")
    h.bmcs.fail_times["compute-2"] = 2
    spec = rule(step(ComponentType.COMPUTE, 1, power_on(), attempts=3))
    outcome = await h.run(spec)
    assert outcome.status == TaskStatus.SUCCEEDED
    assert h.bmcs.state_calls["compute-2"] >= 3  # 2 failed attempts + a working one


async def test_fail_fast_marks_running_siblings_failed(pclient: Client) -> None:
    h = Harness(pclient)
    error = "BMC http://bmc-compute-3.invalid unreachable: [Errno 111] Connection refused"
    h.bmcs.fail["compute-3"] = BmcUnreachable("http://bmc-compute-3.invalid", error)
    spec = rule(
        step(ComponentType.COMPUTE, 1, power_on(expected=False)),
        step(ComponentType.NVSWITCH, 1, sleep_action(60)),  # still running when compute fails
        step(ComponentType.POWER_SHELF, 1, sleep_action(60)),
        step(ComponentType.COMPUTE, 2, sleep_action(0.1)),
        step(ComponentType.NVSWITCH, 3, sleep_action(0.1)),
    )
    t0 = time.monotonic()
    outcome = await h.run(spec)
    took = time.monotonic() - t0

    assert took < 30, "the sleeping siblings must be cancelled, not awaited"
    assert outcome.status == TaskStatus.FAILED
    expected = f"Compute compute-3: {error}"
    assert outcome.message == expected
    stage1 = outcome.report.stages[0]
    assert stage1.status == ReportStatus.FAILED and stage1.error == expected
    assert [s.status for s in stage1.steps] == [ReportStatus.FAILED] * 3
    assert all(s.error == expected for s in stage1.steps)
    assert stage_statuses(outcome.report) == ["failed", "pending", "pending"]
    for later in outcome.report.stages[1:]:
        assert all(s.status == ReportStatus.PENDING for s in later.steps)
    assert outcome.report.error == expected
    check_timestamps(outcome.report)


async def test_skipped_steps_and_stages(pclient: Client) -> None:
    h = Harness(pclient)
    computes = [t for t in RACK if t.type == ComponentType.COMPUTE]
    spec = rule(
        step(ComponentType.POWER_SHELF, 1, sleep_action(0.1)),  # no shelves: stage skipped
        step(ComponentType.COMPUTE, 2, sleep_action(0.1)),
        step(ComponentType.NVSWITCH, 2, sleep_action(0.1)),  # no switches: step skipped
    )
    outcome = await h.run(spec, components=computes)

    assert outcome.status == TaskStatus.SUCCEEDED
    first, second = outcome.report.stages
    assert first.status == ReportStatus.SKIPPED
    assert first.steps[0].status == ReportStatus.SKIPPED
    assert first.steps[0].total_components == 0
    assert second.status == ReportStatus.COMPLETED
    assert [s.status for s in second.steps] == [ReportStatus.COMPLETED, ReportStatus.SKIPPED]
    assert second.steps[1].started_at is None and second.steps[1].finished_at is None
    check_timestamps(outcome.report)
    # The very first report already shows the skips (and the first stage that runs).
    assert [s.status.value for s in h.store.reports[0].stages] == ["skipped", "running"]


async def test_max_parallel_limits_concurrency(pclient: Client) -> None:
    h = Harness(pclient)
    h.bmcs.reset_delay = 0.4
    many = [target(f"compute-{i}", ComponentType.COMPUTE) for i in range(6)]
    spec = rule(step(ComponentType.COMPUTE, 1, power_on(expected=False), max_parallel=2))
    outcome = await h.run(spec, components=many)
    assert outcome.status == TaskStatus.SUCCEEDED
    assert h.bmcs.max_active == 2
    assert len(h.bmcs.resets) == 6

    h2 = Harness(pclient)
    h2.bmcs.reset_delay = 0.4
    spec = rule(step(ComponentType.COMPUTE, 1, power_on(expected=False), max_parallel=0))
    outcome = await h2.run(spec, components=many)
    assert outcome.status == TaskStatus.SUCCEEDED
    assert h2.bmcs.max_active > 2  # unlimited: all six may run at once


async def test_step_timeout(pclient: Client) -> None:
    h = Harness(pclient)
    spec = rule(step(ComponentType.COMPUTE, 1, sleep_action(30), timeout=1.0, attempts=1))
    t0 = time.monotonic()
    outcome = await h.run(spec)
    assert time.monotonic() - t0 < 20
    assert outcome.status == TaskStatus.FAILED
    assert outcome.message == "Compute compute-0: timed out after 1s"
    assert outcome.report.stages[0].steps[0].error == outcome.message


async def test_power_state_never_reached_says_so(pclient: Client) -> None:
    h = Harness(pclient)
    h.bmcs.apply_resets = False  # the BMC accepts the reset but the power never comes on
    computes = [target("compute-0", ComponentType.COMPUTE)]
    spec = rule(step(ComponentType.COMPUTE, 1, power_on(poll=0.2), timeout=2.0))
    outcome = await h.run(spec, components=computes)
    assert outcome.status == TaskStatus.FAILED
    assert outcome.message.startswith("Compute compute-0: power state of compute-0 is Off,")
    assert "expected On" in outcome.message


async def test_whole_task_timeout(pclient: Client) -> None:
    h = Harness(pclient)
    spec = rule(
        step(ComponentType.COMPUTE, 1, sleep_action(30), timeout=60),
        step(ComponentType.NVSWITCH, 2, sleep_action(0.1)),
        timeout=2.0,
    )
    outcome = await h.run(spec)
    assert outcome.status == TaskStatus.FAILED
    assert outcome.message == "task timed out after 2s"
    assert stage_statuses(outcome.report) == ["failed", "pending"]
    assert outcome.report.stages[0].steps[0].error == "task timed out after 2s"


async def test_outcome_comes_before_temporals_execution_timeout(pclient: Client) -> None:
    """An execution timeout shorter than the rule's still ends with an outcome, not a timeout."""
    h = Harness(pclient)
    spec = rule(step(ComponentType.COMPUTE, 1, sleep_action(60), timeout=120), timeout=3600)
    outcome = await h.run(spec, execution_timeout=dt.timedelta(seconds=8))
    assert outcome.status == TaskStatus.FAILED
    assert outcome.message.startswith("task timed out after ")
    assert stage_statuses(outcome.report) == ["failed"]


async def test_long_error_is_cut_to_512_bytes(pclient: Client) -> None:
    h = Harness(pclient)
    h.bmcs.fail["compute-0"] = BmcError("http://x", "é" * 600 + "\nsecond line")
    spec = rule(step(ComponentType.COMPUTE, 1, power_on(expected=False)))
    outcome = await h.run(spec)
    assert outcome.status == TaskStatus.FAILED
    assert len(outcome.message.encode()) <= 512
    assert "second line" not in outcome.message
    assert outcome.report.error == outcome.message
    assert len((outcome.report.stages[0].error or "").encode()) <= 512


async def test_publish_failures_are_not_fatal(pclient: Client) -> None:
    h = Harness(pclient, broken_store=True)
    spec = rule(step(ComponentType.COMPUTE, 1, sleep_action(0.1)))
    outcome = await h.run(spec)
    assert outcome.status == TaskStatus.SUCCEEDED
    assert h.store.calls >= 2  # retried, then given up, without failing the task


class SlowKopfImport(importlib.abc.MetaPathFinder):
    """Makes importing kopf slow, as it is on a loaded machine (the sandbox re-imports
    every module it does not pass through, for each workflow run), and records it."""

    def __init__(self) -> None:
        self.looked_up: list[str] = []

    def find_spec(self, name: str, path: Any, target: Any = None) -> None:
        if name == "kopf" or name.startswith("kopf."):
            self.looked_up.append(name)
            time.sleep(3)  # past the workflow deadlock detector's 2 s
        return None  # the other finders do the import


async def test_a_workflow_log_line_imports_nothing(pclient: Client) -> None:
    """A workflow's log line (a failed progress write) goes through the process's log
    filter inside the workflow sandbox. The filter imported kopf there: seconds on the
    soak's loaded machine, the deadlock detector failed the workflow task, and the
    eviction that followed could not finish ("Eviction processed, but N tasks
    remain"): the task stayed Running until the worker restarted."""
    root = logging.getLogger()
    handler = logging.StreamHandler(io.StringIO())
    handler.addFilter(TaskFieldsFilter())  # as configure_logging installs it
    root.addHandler(handler)
    finder = SlowKopfImport()
    sys.meta_path.insert(0, finder)
    try:
        h = Harness(pclient, broken_store=True)  # every progress write fails: a warning
        spec = rule(step(ComponentType.COMPUTE, 1, sleep_action(0.1)))
        async with h.worker():
            handle = await h.start(spec)
            outcome = await asyncio.wait_for(handle.result(), timeout=60)
    finally:
        sys.meta_path.remove(finder)
        root.removeHandler(handler)
    assert outcome.status == TaskStatus.SUCCEEDED
    assert "could not publish the report" in handler.stream.getvalue()
    assert finder.looked_up == []


async def test_progress_never_overwrites_a_terminal_status(pclient: Client) -> None:
    h = Harness(pclient)
    h.store.task.status.status = TaskStatus.TERMINATED
    h.store.task.status.message = "Cancelled by user"
    spec = rule(step(ComponentType.COMPUTE, 1, sleep_action(0.1)))
    outcome = await h.run(spec)
    assert outcome.status == TaskStatus.SUCCEEDED
    assert h.store.reports == []
    assert h.store.task.status.status == TaskStatus.TERMINATED


async def test_no_reset_after_terminate(pclient: Client) -> None:
    """Heartbeats are slow now; the Reset itself is gated on the workflow being alive.

    PowerCycle on a BMC without PowerCycle: ForceOff, wait for Off, then On.
    The workflow is terminated while the activity waits for Off; when Off
    comes, the activity (which has not heard of the terminate: its heartbeats
    are throttled to tens of seconds) must not send the On.
    """
    h = Harness(pclient)
    h.bmcs.power["compute-0"] = PowerState.ON
    h.bmcs.apply_resets = False  # Off only when the test says so
    computes = [target("compute-0", ComponentType.COMPUTE)]
    cycle = StepAction(
        type=ActionType.POWER_CONTROL, power=PowerAction.POWER_CYCLE, poll_interval_seconds=0.1
    )
    spec = rule(step(ComponentType.COMPUTE, 1, cycle, timeout=120))
    async with h.worker():
        handle = await h.start(spec, components=computes)
        deadline = time.monotonic() + 20
        while h.bmcs.state_calls["compute-0"] < 3:
            assert time.monotonic() < deadline, "the activity never started polling"
            await asyncio.sleep(0.1)
        assert h.bmcs.resets == [("compute-0", PowerAction.FORCE_OFF)]
        await handle.terminate(reason="Cancelled by user")
        polls = h.bmcs.state_calls["compute-0"]
        with h.bmcs.lock:
            h.bmcs.power["compute-0"] = PowerState.OFF
        # The activity sees Off (a read: allowed), then must not send On.
        while h.bmcs.state_calls["compute-0"] == polls:
            assert time.monotonic() < deadline + 20, "the activity stopped polling"
            await asyncio.sleep(0.1)
        await asyncio.sleep(2.0)
    assert h.bmcs.resets == [("compute-0", PowerAction.FORCE_OFF)]


async def test_fail_fast_sibling_sends_no_reset(pclient: Client) -> None:
    """A sibling cancelled by fail-fast learns it from the run guard, not a heartbeat."""
    h = Harness(pclient)
    h.bmcs.power["nvswitch-0"] = PowerState.ON
    h.bmcs.apply_resets = False
    h.bmcs.fail["compute-0"] = BmcError("http://192.0.2.1", "BMC says no")
    h.bmcs.fail_times["compute-0"] = 1000
    cycle = StepAction(
        type=ActionType.POWER_CONTROL, power=PowerAction.POWER_CYCLE, poll_interval_seconds=0.1
    )
    spec = rule(
        # The compute step fails once the switch waits for Off; the switch must not send On.
        step(ComponentType.COMPUTE, 1, StepAction(
            type=ActionType.VERIFY_POWER_STATUS, expected_state=PowerState.ON
        )),
        step(ComponentType.NVSWITCH, 1, cycle, timeout=120),
    )  # fmt: skip
    computes = [target("compute-0", ComponentType.COMPUTE)]
    switches = [target("nvswitch-0", ComponentType.NVSWITCH)]
    h.bmcs.fail_delay["compute-0"] = 1.0
    async with h.worker():
        handle = await h.start(spec, components=computes + switches)
        outcome = await asyncio.wait_for(handle.result(), timeout=60)
        assert outcome.status == TaskStatus.FAILED
        assert outcome.message.startswith("Compute compute-0: BMC says no")
        with h.bmcs.lock:
            h.bmcs.power["nvswitch-0"] = PowerState.OFF
        await asyncio.sleep(2.0)
    assert h.bmcs.resets == [("nvswitch-0", PowerAction.FORCE_OFF)]


async def _history_events(handle: WorkflowHandle[Any, Any]) -> list[Any]:
    return list((await handle.fetch_history()).events)


def _local_activity_markers(events: list[Any]) -> list[Any]:
    return [
        e
        for e in events
        if e.HasField("marker_recorded_event_attributes")
        and e.marker_recorded_event_attributes.marker_name == "core_local_activity"
    ]


async def test_a_waiting_task_took_one_workflow_task(pclient: Client) -> None:
    """Plan, first stage and the step's timer in the first workflow task, in one
    write; then nothing."""
    h = Harness(pclient)
    spec = rule(step(ComponentType.COMPUTE, 1, sleep_action(3600), timeout=7200))
    async with h.worker():
        handle = await h.start(spec, components=[target("compute-0", ComponentType.COMPUTE)])
        for _ in range(300):  # up to 30 s for the first write
            if h.store.reports:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.5)  # a coalescing timer, if there were one, fires here
        events = await _history_events(handle)
        await handle.terminate("test over")
    completed = [e for e in events if e.HasField("workflow_task_completed_event_attributes")]
    assert len(completed) == 1
    # No version marker (no patch yet), so no TemporalChangeVersion upsert either.
    markers = [
        e.marker_recorded_event_attributes.marker_name
        for e in events
        if e.HasField("marker_recorded_event_attributes")
    ]
    assert "core_patch" not in markers, markers
    upsert = "upsert_workflow_search_attributes_event_attributes"
    assert not any(e.HasField(upsert) for e in events)
    assert not any(e.HasField("activity_task_scheduled_event_attributes") for e in events)
    # The CR got one write: the plan, its first stage running.
    assert [stage_statuses(r) for r in h.store.reports] == [["running"]]


HISTORIES = Path(__file__).parent / "histories"


async def test_recorded_histories_replay(pclient: Client) -> None:
    """Every history in histories/ (one per released version: histories/README.md) and
    one recorded now, through the JSON form a release stores, replays on this code."""
    h = Harness(pclient)
    spec = rule(
        step(ComponentType.POWER_SHELF, 1, power_on()),
        step(ComponentType.COMPUTE, 2, sleep_action(0.2)),
    )
    async with h.worker():
        handle = await h.start(spec)
        await asyncio.wait_for(handle.result(), timeout=60)
    now = (await handle.fetch_history()).to_json()
    recorded = [(p.name, p.read_text()) for p in sorted(HISTORIES.glob("*.json"))]
    replayer = Replayer(workflows=[NicoTaskWorkflow], data_converter=pydantic_data_converter)
    for name, text in [*recorded, ("recorded now", now)]:
        result = await replayer.replay_workflow(
            WorkflowHistory.from_json(name, text), raise_on_replay_failure=False
        )
        assert result.replay_failure is None, (name, result.replay_failure)


async def test_sleep_steps_are_timers_not_activities(pclient: Client) -> None:
    h = Harness(pclient)
    computes = [target(f"compute-{i}", ComponentType.COMPUTE) for i in range(4)]
    spec = rule(step(ComponentType.COMPUTE, 1, sleep_action(0.3), max_parallel=2))
    async with h.worker():
        handle = await h.start(spec, components=computes)
        outcome = await asyncio.wait_for(handle.result(), timeout=60)
    assert outcome.status == TaskStatus.SUCCEEDED
    assert stage_statuses(outcome.report) == ["completed"]
    assert outcome.report.stages[0].steps[0].total_components == 4
    check_timestamps(outcome.report)
    events = await _history_events(handle)
    scheduled = [
        e.activity_task_scheduled_event_attributes
        for e in events
        if e.HasField("activity_task_scheduled_event_attributes")
    ]
    # No activity task at all: the sleeps are timers, progress goes out as local
    # activities (markers), never behind the step activities.
    assert scheduled == []
    assert _local_activity_markers(events)
    timers = [
        e.timer_started_event_attributes.start_to_fire_timeout.ToTimedelta()
        for e in events
        if e.HasField("timer_started_event_attributes")
    ]
    # Two waves of maxParallel=2 (plus any progress-coalescing timers, which are shorter).
    assert [t for t in timers if t == dt.timedelta(seconds=0.3)] == [dt.timedelta(seconds=0.3)] * 2


async def test_sleep_timeout_is_retried_then_fails_like_the_activity(pclient: Client) -> None:
    h = Harness(pclient)
    spec = rule(step(ComponentType.COMPUTE, 1, sleep_action(30), timeout=1.0, attempts=2))
    outcome = await h.run(spec)
    assert outcome.status == TaskStatus.FAILED
    assert outcome.message == "Compute compute-0: timed out after 1s (gave up after 2 attempts)"
    assert outcome.report.stages[0].steps[0].error == outcome.message


async def test_progress_writes_are_coalesced(pclient: Client) -> None:
    """Ten quick stages: at most one write per second, the final report always written."""
    h = Harness(pclient)
    computes = [target("compute-0", ComponentType.COMPUTE)]
    spec = rule(*[step(ComponentType.COMPUTE, i, sleep_action(0.05)) for i in range(1, 11)])
    async with h.worker():
        handle = await h.start(spec, components=computes)
        outcome = await asyncio.wait_for(handle.result(), timeout=60)
    assert outcome.status == TaskStatus.SUCCEEDED
    events = await _history_events(handle)
    times = [e.event_time.ToDatetime() for e in _local_activity_markers(events)]
    # 30+ transitions, but writes at most once a second (in workflow time) plus the
    # final one, which is never delayed.
    span = (events[-1].event_time.ToDatetime() - events[0].event_time.ToDatetime()).total_seconds()
    assert 2 <= len(times) <= int(span) + 3, (len(times), span)
    assert len(times) < 20
    # The store got the final report, with the highest sequence, which the outcome carries.
    assert h.store.reports[-1] == outcome.report
    assert h.store.task.status.report_sequence == outcome.report_sequence
    sequences = [st.report_sequence for st in h.store.statuses]
    assert sequences == sorted(sequences)
