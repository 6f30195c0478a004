"""Activities: the I/O of a task. Each takes one pydantic argument.

- `publish_progress` writes the live report (status Running) into the CR,
  through Kube.update_task_status, never over a terminal status.
- `run_step_action` runs one step's action on one component through its BMC.

Activities heartbeat at least once a second while they wait, also while a
blocking BMC call runs in a thread, and check for cancellation before every
BMC request: once the workflow is terminated or cancelled, the next
heartbeat learns it and no new BMC request starts.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import tempfile
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from temporalio import activity
from temporalio.exceptions import ApplicationError

from nicotask.api import (
    ActionType,
    NicoTask,
    NicoTaskStatus,
    PowerAction,
    PowerState,
    TaskStatus,
)
from nicotask.kube import NotFound
from nicotask.redfish import (
    BmcAuthFailed,
    BmcError,
    BmcNotFound,
    BmcUnreachable,
    PowerDriver,
    RedfishDriverFactory,
    default_driver_factory,
)
from nicotask.state import is_terminal, with_status
from nicotask.temporal.models import (
    PUBLISH_PROGRESS,
    RUN_STEP_ACTION,
    ComponentTarget,
    ProgressUpdate,
    StepActivityInput,
    StepResult,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

RUNNING_MESSAGE = "Running"

# ApplicationError types (also usable as non_retryable_error_types).
ERR_UNREACHABLE = "BmcUnreachable"
ERR_AUTH = "BmcAuthFailed"
ERR_NOT_FOUND = "BmcNotFound"
ERR_BMC = "BmcError"
ERR_CREDENTIALS = "CredentialsMissing"
ERR_POWER_STATE = "PowerStateMismatch"
ERR_TASK_GONE = "TaskGone"


class TaskStore(Protocol):
    """What the activities need from Kubernetes (nicotask.kube.Kube fits)."""

    async def read_secret(self, namespace: str, name: str) -> dict[str, str]: ...

    async def update_task_status(
        self,
        namespace: str,
        name: str,
        decide: Callable[[NicoTask], NicoTaskStatus | None],
        *,
        uid: str | None = ...,
        attempts: int = ...,
    ) -> tuple[NicoTask, bool]: ...


def progress_decision(update: ProgressUpdate) -> Callable[[NicoTask], NicoTaskStatus | None]:
    """The status a progress write puts on a task: Running with the report, unless terminal."""

    def decide(task: NicoTask) -> NicoTaskStatus | None:
        if is_terminal(task.status.status):
            return None
        new = with_status(task, TaskStatus.RUNNING, RUNNING_MESSAGE, report=update.report)
        if task.status.started is None and update.started is not None:
            new.started = update.started
        return new

    return decide


class TaskActivities:
    """The activities, bound to a Kubernetes client and a BMC driver factory."""

    def __init__(
        self,
        kube: TaskStore,
        redfish: RedfishDriverFactory = default_driver_factory,
        *,
        heartbeat_interval: float = 1.0,
    ) -> None:
        self.kube = kube
        self.redfish = redfish
        self.heartbeat_interval = heartbeat_interval
        self._ca_dir = tempfile.mkdtemp(prefix="nicotask-ca-")

    # ---- publish_progress ------------------------------------------------

    @activity.defn(name=PUBLISH_PROGRESS)
    async def publish_progress(self, update: ProgressUpdate) -> bool:
        """Write status Running and the report; False when the task is already finished."""
        ref = update.task
        try:
            _, wrote = await self.kube.update_task_status(
                ref.namespace, ref.name, progress_decision(update), uid=ref.uid
            )
        except NotFound as exc:
            raise ApplicationError(
                f"nicotask {ref.namespace}/{ref.name} (uid {ref.uid}) is gone",
                type=ERR_TASK_GONE,
                non_retryable=True,
            ) from exc
        return wrote

    # ---- run_step_action -------------------------------------------------

    @activity.defn(name=RUN_STEP_ACTION)
    async def run_step_action(self, inp: StepActivityInput) -> StepResult:
        interval = min(inp.heartbeat_seconds, self.heartbeat_interval)
        runner = _StepRun(self, inp, interval)
        return await runner.run()

    # ---- helpers -----------------------------------------------------------

    async def credentials(self, namespace: str, target: ComponentTarget) -> tuple[str, str]:
        ref = target.credentials_secret
        try:
            data = await self.kube.read_secret(namespace, ref.name)
        except NotFound as exc:
            raise ApplicationError(
                f"secret {namespace}/{ref.name} with the BMC credentials of component"
                f" {target.id} does not exist",
                type=ERR_CREDENTIALS,
                non_retryable=True,
            ) from exc
        missing = [k for k in (ref.username_key, ref.password_key) if k not in data]
        if missing:
            raise ApplicationError(
                f"secret {namespace}/{ref.name} has no key {', '.join(missing)}"
                f" (BMC credentials of component {target.id})",
                type=ERR_CREDENTIALS,
                non_retryable=True,
            )
        return data[ref.username_key], data[ref.password_key]

    async def verify_setting(self, namespace: str, target: ComponentTarget) -> bool | str:
        """requests' `verify`: False, True, or the path of the rack's CA bundle."""
        if target.insecure_skip_verify:
            return False
        if not target.ca_secret_ref:
            return True
        try:
            data = await self.kube.read_secret(namespace, target.ca_secret_ref)
        except NotFound as exc:
            raise ApplicationError(
                f"secret {namespace}/{target.ca_secret_ref} with the BMC CA does not exist",
                type=ERR_CREDENTIALS,
                non_retryable=True,
            ) from exc
        pem = data.get("ca.crt")
        if not pem:
            raise ApplicationError(
                f"secret {namespace}/{target.ca_secret_ref} has no key ca.crt",
                type=ERR_CREDENTIALS,
                non_retryable=True,
            )
        path = os.path.join(self._ca_dir, hashlib.sha256(pem.encode()).hexdigest() + ".pem")
        await asyncio.to_thread(_write_once, path, pem)
        return path


def _write_once(path: str, text: str) -> None:
    if not os.path.exists(path):
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)


class _StepRun:
    """One execution of run_step_action: heartbeats, cancellation checks, BMC calls."""

    def __init__(self, acts: TaskActivities, inp: StepActivityInput, interval: float) -> None:
        self.acts = acts
        self.inp = inp
        self.interval = max(0.05, interval)
        self.target = inp.component
        self.phase = "starting"
        self.bmc_requests = 0
        self.t0 = time.monotonic()
        timeout = activity.info().start_to_close_timeout
        self.budget = timeout.total_seconds() if timeout else None

    # heartbeating ----------------------------------------------------------

    def heartbeat(self) -> None:
        activity.heartbeat({"component": self.target.id, "phase": self.phase})

    def ensure_not_cancelled(self) -> None:
        if activity.is_cancelled():
            raise asyncio.CancelledError(f"activity cancelled before {self.phase}")

    async def beating(self, awaitable: Awaitable[T]) -> T:
        """Await while heartbeating every interval; cancellation propagates."""
        fut = asyncio.ensure_future(awaitable)
        try:
            while True:
                done, _ = await asyncio.wait({fut}, timeout=self.interval)
                if done:
                    return fut.result()
                self.heartbeat()
        finally:
            if not fut.done():
                fut.cancel()

    async def sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            await asyncio.sleep(min(left, self.interval))
            self.heartbeat()

    async def bmc(self, phase: str, fn: Callable[..., T], *args: Any) -> T:
        """One BMC request in a thread; never started once the activity is cancelled."""
        self.phase = phase
        self.ensure_not_cancelled()
        self.heartbeat()
        self.bmc_requests += 1
        try:
            return await self.beating(asyncio.to_thread(fn, *args))
        except BmcAuthFailed as exc:
            ref = self.target.credentials_secret
            raise ApplicationError(
                f"BMC {self.target.endpoint} refused the credentials of secret"
                f" {self.inp.task.namespace}/{ref.name}",
                type=ERR_AUTH,
                non_retryable=True,
            ) from exc
        except BmcUnreachable as exc:
            raise ApplicationError(exc.message, type=ERR_UNREACHABLE) from exc
        except BmcNotFound as exc:
            raise ApplicationError(exc.message, type=ERR_NOT_FOUND, non_retryable=True) from exc
        except BmcError as exc:
            raise ApplicationError(exc.message, type=ERR_BMC) from exc

    # the actions -----------------------------------------------------------

    async def run(self) -> StepResult:
        self.heartbeat()
        action = self.inp.action
        if action.type == ActionType.SLEEP:
            self.phase = "sleep"
            await self.sleep(float(action.duration_seconds or 0))
            return StepResult(component_id=self.target.id)
        driver = await self.driver()
        sid = self.target.system_id
        if action.type == ActionType.POWER_CONTROL:
            assert action.power is not None
            await self.power_control(driver, sid, action.power)
            if action.expected_state is None:
                return StepResult(component_id=self.target.id)
            state = await self.await_state(driver, sid, action.expected_state)
            return StepResult(component_id=self.target.id, power_state=state)
        if action.type == ActionType.VERIFY_POWER_STATUS:
            assert action.expected_state is not None
            state = await self.await_state(driver, sid, action.expected_state)
            return StepResult(component_id=self.target.id, power_state=state)
        raise ApplicationError(
            f"unsupported action type {action.type}", type="UnsupportedAction", non_retryable=True
        )

    async def driver(self) -> PowerDriver:
        namespace = self.inp.task.namespace
        self.phase = "credentials"
        user, password = await self.beating(self.acts.credentials(namespace, self.target))
        verify = await self.beating(self.acts.verify_setting(namespace, self.target))
        return self.acts.redfish(self.target.endpoint, user, password, verify)

    async def power_control(self, driver: PowerDriver, sid: str | None, power: PowerAction) -> None:
        if power == PowerAction.POWER_CYCLE:
            allowed = await self.bmc("allowed resets", driver.allowed_resets, sid)
            if PowerAction.POWER_CYCLE in allowed:
                await self.bmc("reset PowerCycle", driver.reset, sid, PowerAction.POWER_CYCLE)
                return
            # No PowerCycle on this BMC: ForceOff, wait for Off, then On.
            state = await self.bmc("power state", driver.power_state, sid)
            if state != PowerState.OFF:
                await self.bmc("reset ForceOff", driver.reset, sid, PowerAction.FORCE_OFF)
                await self.await_state(driver, sid, PowerState.OFF)
            await self.bmc("reset On", driver.reset, sid, PowerAction.ON)
            return
        if power in (PowerAction.ON, PowerAction.FORCE_OFF, PowerAction.GRACEFUL_SHUTDOWN):
            # Idempotent: a retry (or a rack already in the state) sends nothing.
            want = PowerState.ON if power == PowerAction.ON else PowerState.OFF
            state = await self.bmc("power state", driver.power_state, sid)
            if state == want:
                return
        await self.bmc(f"reset {power.value}", driver.reset, sid, power)

    async def await_state(
        self, driver: PowerDriver, sid: str | None, expected: PowerState
    ) -> PowerState:
        """Poll until the power state is `expected`; the step's timeout bounds the wait."""
        poll = max(0.05, float(self.inp.action.poll_interval_seconds))
        while True:
            state = await self.bmc("power state", driver.power_state, sid)
            if state == expected:
                return state
            now = state.value if state else "transitioning"
            self.phase = f"waiting for {expected.value} (now {now})"
            elapsed = time.monotonic() - self.t0
            if self.budget is not None and elapsed + poll + 0.5 >= self.budget:
                # Say what we saw rather than let the attempt die of a bare timeout.
                raise ApplicationError(
                    f"power state of {self.target.id} is {now}, expected {expected.value}"
                    f" (waited {elapsed:.0f}s)",
                    type=ERR_POWER_STATE,
                )
            await self.sleep(poll)
