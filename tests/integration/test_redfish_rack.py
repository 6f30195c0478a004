"""A whole sample rack through the real pieces: sushy-tools BMCs, kube-apiserver, Temporal.

The real NicoTaskWorkflow runs in an in-process Worker with the real
TaskActivities, Kube and Redfish driver, for a NicoTask, NicoRack and
credentials Secret in a fresh namespace. The operator is not part of this
test: the test starts the workflow itself (id = task uid) and, at the end,
writes the terminal status from the outcome the way the operator does.

The emulator's fake driver applies a power change 1 to 11 s after the
request, so these tests are few and take tens of seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from typing import Any

import pytest
import sushy
from integration_support import component as support_component
from integration_support import create_rack, create_task
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio import watch as k8s_watch
from temporalio.client import Client

from nicotask import api
from nicotask.api import NicoRack, NicoTask, Operation, ReportStatus, TaskStatus
from nicotask.bmc_policy import EndpointPolicy
from nicotask.kube import TASKS, Kube
from nicotask.lifecycle import with_status
from nicotask.rules import builtin_rule
from nicotask.temporal.control import start_task_workflow
from nicotask.temporal.models import WorkflowOutcome, build_workflow_input
from nicotask.temporal.worker import build_worker

# The emulator listens on loopback, which the worker refuses unless told otherwise.
LOOPBACK_OK = EndpointPolicy.from_cidrs(["127.0.0.0/8"])
TYPES = {"compute": "Compute", "nvswitch": "NVSwitch", "powershelf": "PowerShelf"}

pytestmark = pytest.mark.asyncio(loop_scope="session")


# ---- helpers -------------------------------------------------------------


def emulator(devenv: Any, password: str | None = None) -> Any:
    return sushy.Sushy(
        devenv.redfish_url,
        username=devenv.redfish_user,
        password=password or devenv.redfish_password,
        server_side_retries=1,
        server_side_retries_delay=0.1,
    )


def power_states(devenv: Any) -> dict[str, str]:
    root = emulator(devenv)
    return {s["name"]: root.get_system(s["path"]).power_state.value for s in devenv.redfish_systems}


async def force_all(devenv: Any, state: str) -> None:
    """Put every emulated system in `state` directly (test setup), and wait for it."""

    def run() -> None:
        root = emulator(devenv)
        reset = sushy.RESET_ON if state == "On" else sushy.RESET_FORCE_OFF
        for s in devenv.redfish_systems:
            system = root.get_system(s["path"])
            if system.power_state.value != state:
                system.reset_system(reset)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if all(v == state for v in power_states(devenv).values()):
                return
            time.sleep(0.5)
        raise AssertionError(f"emulated systems did not reach {state}: {power_states(devenv)}")

    await asyncio.to_thread(run)


async def make_secret(
    kube_api: Any, namespace: str, name: str, user: str, password: str, *, labelled: bool = True
) -> None:
    labels = {api.BMC_CREDENTIALS_LABEL: "true"} if labelled else {}
    await k8s.CoreV1Api(kube_api).create_namespaced_secret(
        namespace,
        k8s.V1Secret(
            metadata=k8s.V1ObjectMeta(name=name, labels=labels),
            string_data={"username": user, "password": password},
        ),
    )


def component(system: dict[str, Any], endpoint: str, secret: str | None = None) -> dict[str, Any]:
    return support_component(system["name"], endpoint, system["id"], TYPES[system["type"]], secret)


async def make_task(kube: Kube, namespace: str, rack: str, operation: Operation) -> NicoTask:
    name = f"{operation.value.lower()}-{uuid.uuid4().hex[:6]}"
    return await create_task(kube, namespace, name, rack, operation.value)


class Watcher:
    """Watches the CR from its creation and keeps every distinct (status, message, report)."""

    def __init__(self, kube: Kube, task: NicoTask) -> None:
        self.kube = kube
        self.task = task
        self.seen: list[tuple[str, str | None, dict[str, Any]]] = []
        self._stop = asyncio.Event()
        self._job: asyncio.Task[None] | None = None

    def _record(self, obj: dict[str, Any]) -> None:
        current = NicoTask.model_validate(obj)
        if current.status.report is None:
            return
        snap = (current.status.status.value, current.status.message, current.status.report.wire())
        if not self.seen or self.seen[-1] != snap:
            self.seen.append(snap)

    async def _run(self) -> None:
        ns, name = self.task.metadata.namespace or "", self.task.metadata.name
        version = self.task.metadata.resource_version
        while not self._stop.is_set():
            watch = k8s_watch.Watch()
            try:
                async with watch.stream(
                    self.kube.custom.list_namespaced_custom_object,
                    api.GROUP,
                    api.VERSION,
                    ns,
                    TASKS,
                    field_selector=f"metadata.name={name}",
                    resource_version=version,
                    timeout_seconds=60,
                ) as stream:
                    async for event in stream:
                        obj = event["object"]
                        version = obj["metadata"]["resourceVersion"]
                        self._record(obj)
            finally:
                watch.stop()

    def __enter__(self) -> Watcher:
        self._job = asyncio.create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()

    async def stop(self) -> None:
        """Stop once the watch has caught up with the stored object."""
        self._stop.set()
        stored = await self.kube.get_task(
            self.task.metadata.namespace or "", self.task.metadata.name
        )
        want = stored.status.report.wire() if stored.status.report else None
        deadline = time.monotonic() + 10
        while want and (not self.seen or self.seen[-1][2] != want):
            assert time.monotonic() < deadline, "the watch never saw the last report"
            await asyncio.sleep(0.05)
        if self._job is not None:
            self._job.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._job

    def stage_views(self) -> list[list[str]]:
        return [[s["status"] for s in report["stages"]] for _, _, report in self.seen]


async def run_task(
    pclient: Client, kube: Kube, task: NicoTask, rack: NicoRack, operation: Operation
) -> tuple[WorkflowOutcome, Watcher]:
    spec = builtin_rule(operation)
    inp = build_workflow_input(task, rack, spec.rule_id, spec)
    assert inp.task.uid == task.metadata.uid
    queue = f"test-rack-{uuid.uuid4().hex[:8]}"
    watcher = Watcher(kube, task)
    async with build_worker(pclient, kube, task_queue=queue, bmc_policy=LOOPBACK_OK):
        handle = await start_task_workflow(pclient, inp, task_queue=queue)
        assert handle.id == task.metadata.uid
        with watcher:
            outcome = await asyncio.wait_for(handle.result(), timeout=240)
        await watcher.stop()
    assert isinstance(outcome, WorkflowOutcome)
    return outcome, watcher


async def finish_like_the_operator(
    kube: Kube, task: NicoTask, outcome: WorkflowOutcome
) -> NicoTask:
    stored, wrote = await kube.update_task_status(
        task.metadata.namespace or "",
        task.metadata.name,
        lambda t: with_status(
            t, outcome.status, outcome.message, now=outcome.finished, report=outcome.report
        ),
        uid=task.metadata.uid,
    )
    assert wrote
    return stored


def check_final_timestamps(report: dict[str, Any]) -> None:
    for stage in report["stages"]:
        for item in [stage, *stage["steps"]]:
            if item["status"] in ("pending", "skipped"):
                assert "startedAt" not in item and "finishedAt" not in item, item
            else:
                assert item["startedAt"] <= item["finishedAt"], item


# ---- tests -----------------------------------------------------------------


async def test_power_on_then_off_a_whole_rack(
    devenv: Any, kube_api: Any, namespace: str, crds: None, pclient: Client
) -> None:
    systems = devenv.redfish_systems
    assert len(systems) >= 8
    await force_all(devenv, "Off")
    kube = Kube(kube_api)
    await make_secret(kube_api, namespace, "bmc", devenv.redfish_user, devenv.redfish_password)
    rack = await create_rack(
        kube, namespace, "rack-1", [component(s, devenv.redfish_url) for s in systems]
    )

    # ---- power on: shelves, then switches, then compute ----
    task = await make_task(kube, namespace, "rack-1", Operation.POWER_ON)
    outcome, watcher = await run_task(pclient, kube, task, rack, Operation.POWER_ON)

    assert outcome.status == TaskStatus.SUCCEEDED, outcome.message
    views = watcher.stage_views()
    assert views[0] == ["running", "pending", "pending"], views  # the plan, stage 1 started
    assert ["running", "pending", "pending"] in views, views
    assert ["completed", "running", "pending"] in views, views
    assert ["completed", "completed", "running"] in views, views
    assert views[-1] == ["completed", "completed", "completed"], views
    # A stage only starts once the one before completed.
    order = [views.index(v) for v in (
        ["running", "pending", "pending"],
        ["completed", "running", "pending"],
        ["completed", "completed", "running"],
    )]  # fmt: skip
    assert order == sorted(order)
    # While it ran, the CR said Running.
    assert all(status == "Running" and message == "Running" for status, message, _ in watcher.seen)

    final = watcher.seen[-1][2]
    assert final == outcome.report.wire()
    check_final_timestamps(final)
    steps = [st for stage in final["stages"] for st in stage["steps"]]
    assert [st["componentType"] for st in steps] == ["PowerShelf", "NVSwitch", "Compute"]
    counts = {TYPES[k]: sum(1 for s in systems if s["type"] == k) for k in TYPES}
    assert [st["totalComponents"] for st in steps] == [counts[st["componentType"]] for st in steps]
    assert all("completedComponents" not in st for st in steps)
    states = await asyncio.to_thread(power_states, devenv)
    assert set(states.values()) == {"On"}, states

    stored = await finish_like_the_operator(kube, task, outcome)
    assert stored.status.status == TaskStatus.SUCCEEDED
    assert stored.status.started is not None and stored.status.finished is not None
    assert stored.status.report == outcome.report

    # ---- power off: the reverse order ----
    task = await make_task(kube, namespace, "rack-1", Operation.POWER_OFF)
    outcome, watcher = await run_task(pclient, kube, task, rack, Operation.POWER_OFF)
    assert outcome.status == TaskStatus.SUCCEEDED, outcome.message
    assert [st["componentType"] for s in watcher.seen[-1][2]["stages"] for st in s["steps"]] == [
        "Compute", "NVSwitch", "PowerShelf",
    ]  # fmt: skip
    assert ["completed", "running", "pending"] in watcher.stage_views()
    states = await asyncio.to_thread(power_states, devenv)
    assert set(states.values()) == {"Off"}, states


async def test_unreachable_bmc_fails_fast(
    devenv: Any, kube_api: Any, namespace: str, crds: None, pclient: Client
) -> None:
    """Switch BMCs that refuse connections: stage 1 done, stage 2 failed, stage 3 pending."""
    kube = Kube(kube_api)
    await make_secret(kube_api, namespace, "bmc", devenv.redfish_user, devenv.redfish_password)
    dead = "http://127.0.0.1:1"
    shelves = [s for s in devenv.redfish_systems if s["type"] == "powershelf"]
    switches = [s for s in devenv.redfish_systems if s["type"] == "nvswitch"]
    computes = [s for s in devenv.redfish_systems if s["type"] == "compute"][:2]
    components = (
        [component(s, devenv.redfish_url) for s in shelves]
        + [component(s, dead) for s in switches]
        + [component(s, devenv.redfish_url) for s in computes]
    )
    rack = await create_rack(kube, namespace, "rack-dead", components)
    task = await make_task(kube, namespace, "rack-dead", Operation.POWER_ON)
    outcome, watcher = await run_task(pclient, kube, task, rack, Operation.POWER_ON)

    assert outcome.status == TaskStatus.FAILED
    assert outcome.message.startswith("NVSwitch nvswitch-")
    assert f"BMC {dead} unreachable: [Errno 111] Connection refused" in outcome.message
    assert outcome.message.endswith("(gave up after 3 attempts)")
    assert len(outcome.message.encode()) <= 512
    report = outcome.report
    assert [s.status for s in report.stages] == [
        ReportStatus.COMPLETED, ReportStatus.FAILED, ReportStatus.PENDING,
    ]  # fmt: skip
    assert report.stages[1].error == outcome.message
    assert report.stages[1].steps[0].error == outcome.message
    assert report.error == outcome.message
    assert report.stages[2].started_at is None
    assert watcher.seen[-1][2] == report.wire()
    check_final_timestamps(report.wire())

    stored = await finish_like_the_operator(kube, task, outcome)
    assert stored.status.status == TaskStatus.FAILED
    assert stored.status.message == outcome.message
    assert stored.status.report is not None and stored.status.report.error == outcome.message


async def test_wrong_password_fails_without_retries(
    devenv: Any, kube_api: Any, namespace: str, crds: None, pclient: Client
) -> None:
    kube = Kube(kube_api)
    await make_secret(kube_api, namespace, "bmc-wrong", devenv.redfish_user, "not-the-password")
    components = [component(s, devenv.redfish_url) for s in devenv.redfish_systems]
    rack = await create_rack(kube, namespace, "rack-auth", components, secret="bmc-wrong")
    task = await make_task(kube, namespace, "rack-auth", Operation.POWER_ON)
    t0 = time.monotonic()
    outcome, _ = await run_task(pclient, kube, task, rack, Operation.POWER_ON)

    assert time.monotonic() - t0 < 15  # non-retryable: no 3 attempts with backoff
    assert outcome.status == TaskStatus.FAILED
    assert outcome.message.startswith("PowerShelf powershelf-")
    assert outcome.message.endswith(
        f"BMC {devenv.redfish_url} refused the credentials of secret {namespace}/bmc-wrong"
    )
    assert [s.status.value for s in outcome.report.stages] == ["failed", "pending", "pending"]
    stored = await finish_like_the_operator(kube, task, outcome)
    assert stored.status.status == TaskStatus.FAILED
