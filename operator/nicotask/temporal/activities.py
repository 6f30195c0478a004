"""Activities: the I/O of a task. Each takes one pydantic argument.

- `publish_progress` writes the live report (status Running, reportSequence)
  into the CR with one status JSON patch (its first op tests metadata.uid),
  made safe by the CRD's CEL rules: a terminal status is final and
  reportSequence never decreases, so a late or repeated write is refused
  (and counted as superseded), never applied.
- `run_step_action` runs one step's action on one component through its BMC.
  The input only names the task and the component: everything else comes
  from the cluster (targets.py). Every state-changing BMC request (a Reset)
  is preceded by a run-guard check of the activity's own workflow run
  (run_guard.py): once the workflow is terminated or the activity cancelled,
  no Reset goes out. Reads (power state) need no check.

Heartbeats are throttled by the SDK (the heartbeat timeout is tens of
seconds): they only detect a lost worker, they do not gate BMC requests.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, TypeVar

from temporalio import activity
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

from nicotask.api import (
    ActionType,
    NicoRack,
    NicoTask,
    NicoTaskStatus,
    PowerAction,
    PowerState,
    TaskStatus,
    rfc3339,
    utcnow,
)
from nicotask.bmc_policy import EndpointPolicy
from nicotask.kube import NotFound, Refused, SecretData
from nicotask.lifecycle import health_conditions, is_terminal, with_status
from nicotask.redfish import (
    BmcAuthFailed,
    BmcError,
    BmcNotFound,
    BmcRefused,
    BmcUnreachable,
    PowerDriver,
    RedfishDriverFactory,
    driver_factory,
)
from nicotask.temporal.models import (
    PUBLISH_PROGRESS,
    RUN_STEP_ACTION,
    ProgressUpdate,
    StepActivityInput,
    StepResult,
    TaskRef,
)
from nicotask.temporal.run_guard import RunGuard
from nicotask.temporal.targets import (
    ERR_CREDENTIALS,
    ERR_REFUSED,
    ERR_TASK_GONE,
    ERR_UNREACHABLE,
    Target,
    TargetResolver,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

RUNNING_MESSAGE = "Running"

# ApplicationError types (also usable as non_retryable_error_types).
ERR_AUTH = "BmcAuthFailed"
ERR_NOT_FOUND = "BmcNotFound"
ERR_BMC = "BmcError"
ERR_POWER_STATE = "PowerStateMismatch"
ERR_NOT_LIVE = "WorkflowNotRunning"
__all__ = [
    "ERR_AUTH",
    "ERR_BMC",
    "ERR_CREDENTIALS",
    "ERR_NOT_FOUND",
    "ERR_NOT_LIVE",
    "ERR_POWER_STATE",
    "ERR_REFUSED",
    "ERR_TASK_GONE",
    "ERR_UNREACHABLE",
    "TaskActivities",
    "TaskStore",
    "progress_decision",
    "progress_ops",
]

# The messages of the CRD's CEL rules that make a progress write superfluous.
CEL_SUPERSEDED = ("status.status is terminal", "status.reportSequence cannot decrease")

# Local heartbeat calls while waiting; the SDK sends at most one per throttle
# interval (0.8 x the heartbeat timeout), so this costs Temporal nothing extra.
LOCAL_HEARTBEAT_SECONDS = 5.0


class TaskStore(Protocol):
    """What the activities need from Kubernetes (nicotask.kube.Kube fits)."""

    async def get_task(self, namespace: str, name: str) -> NicoTask: ...

    async def get_rack(self, namespace: str, name: str) -> NicoRack: ...

    async def read_secret_data(self, namespace: str, name: str) -> SecretData: ...

    async def list_objects(self, plural: str, namespace: str | None = None) -> list[Any]: ...

    async def json_patch_task_status(
        self, namespace: str, name: str, ops: list[dict[str, Any]]
    ) -> None: ...

    async def update_task_status(
        self,
        namespace: str,
        name: str,
        decide: Callable[[NicoTask], NicoTaskStatus | None],
        *,
        uid: str | None = ...,
        attempts: int = ...,
        current: NicoTask | None = ...,
    ) -> tuple[NicoTask, bool]: ...


@functools.lru_cache(maxsize=64)
def running_condition_ops(message: str = RUNNING_MESSAGE) -> tuple[dict[str, Any], ...]:
    """Move the kstatus conditions to Running in place, within the progress patch.

    Pending, Waiting and Running have the same condition statuses (Ready False,
    Reconciling True, Stalled False), so only reason and message change and no
    lastTransitionTime moves. Each condition's type and status are tested
    first: conditions laid out otherwise (or none yet) refuse the whole patch,
    and the write falls back to a full read-decide-write.
    """
    running = health_conditions(NicoTaskStatus(status=TaskStatus.RUNNING, message=message), None)
    ops: list[dict[str, Any]] = []
    for index, cond in enumerate(running):
        at = f"/status/conditions/{index}"
        ops += [
            {"op": "test", "path": f"{at}/type", "value": cond.type},
            {"op": "test", "path": f"{at}/status", "value": cond.status},
            {"op": "add", "path": f"{at}/reason", "value": cond.reason},
            {"op": "add", "path": f"{at}/message", "value": cond.message},
        ]
    return tuple(ops)


def progress_ops(update: ProgressUpdate, now: str) -> list[dict[str, Any]]:
    """The JSON patch of one progress write: Running, its conditions, the report.

    The first op tests metadata.uid, so the write never lands on a task
    recreated under the same name; `add` replaces each status field whole.
    """
    message = update.message or RUNNING_MESSAGE
    fields: dict[str, Any] = {
        "status": TaskStatus.RUNNING.value,
        "message": message,
        "report": update.report.wire(),
        "reportSequence": update.sequence,
        "updated": now,
    }
    if update.started is not None:
        fields["started"] = rfc3339(update.started)
    return [
        {"op": "test", "path": "/metadata/uid", "value": update.task.uid},
        *({"op": "add", "path": f"/status/{key}", "value": value} for key, value in fields.items()),
        *running_condition_ops(message),
    ]


def progress_decision(update: ProgressUpdate) -> Callable[[NicoTask], NicoTaskStatus | None]:
    """The same write as a full status (when the task has no status yet to patch)."""

    def decide(task: NicoTask) -> NicoTaskStatus | None:
        if is_terminal(task.status.status):
            return None
        if (task.status.report_sequence or 0) > update.sequence:
            return None
        message = update.message or RUNNING_MESSAGE
        new = with_status(task, TaskStatus.RUNNING, message, report=update.report)
        new.report_sequence = update.sequence
        if update.started is not None:
            new.started = update.started
        return new

    return decide


def _gone(ref: TaskRef) -> ApplicationError:
    return ApplicationError(
        f"nicotask {ref.namespace}/{ref.name} (uid {ref.uid}) is gone",
        type=ERR_TASK_GONE,
        non_retryable=True,
    )


class TaskActivities:
    """The activities, bound to Kubernetes, a BMC driver factory and a run guard."""

    def __init__(
        self,
        kube: TaskStore,
        redfish: RedfishDriverFactory | None = None,
        *,
        run_guard: RunGuard | None = None,
        policy: EndpointPolicy | None = None,
        namespaces: Sequence[str] = (),
        cache_seconds: float = 5.0,
        heartbeat_interval: float = LOCAL_HEARTBEAT_SECONDS,
    ) -> None:
        self.kube = kube
        self.policy = policy or EndpointPolicy()
        self.redfish = redfish or driver_factory(self.policy)
        self.run_guard = run_guard
        self.heartbeat_interval = heartbeat_interval
        self.targets = TargetResolver(
            kube,
            policy=self.policy,
            namespaces=namespaces,
            cache_seconds=cache_seconds,
            ca_dir=tempfile.mkdtemp(prefix="nicotask-ca-"),
        )

    # ---- publish_progress ------------------------------------------------

    @activity.defn(name=PUBLISH_PROGRESS)
    async def publish_progress(self, update: ProgressUpdate) -> bool:
        """Write status Running and the report; False when superseded or already finished."""
        ref = update.task
        served = self.targets.namespaces
        if served and ref.namespace not in served:
            raise ApplicationError(
                f"nicotask {ref.namespace}/{ref.name}: namespace {ref.namespace}"
                " is not served by this worker",
                type=ERR_REFUSED,
                non_retryable=True,
            )
        if ref.uid != activity.info().workflow_id:
            raise ApplicationError(
                f"nicotask {ref.namespace}/{ref.name}: the input's uid {ref.uid} is not"
                f" the workflow id {activity.info().workflow_id}",
                type=ERR_REFUSED,
                non_retryable=True,
            )
        now = rfc3339(utcnow())
        try:
            await self.kube.json_patch_task_status(
                ref.namespace, ref.name, progress_ops(update, now)
            )
        except NotFound as exc:
            raise _gone(ref) from exc
        except Refused as exc:
            why = str(exc)
            if any(rule in why for rule in CEL_SUPERSEDED):
                # A terminal status, or a newer report already stored: superseded.
                log.info(
                    "progress v%d of %s/%s not written: %s", update.sequence, ref.namespace,
                    ref.name, why,
                )  # fmt: skip
                return False
            # The patch did not apply (the API server does not say why): the uid
            # test failed, or there is no status yet. Decide on a fresh read.
            return await self._full_write(update)
        return True

    async def _full_write(self, update: ProgressUpdate) -> bool:
        """GET, check the uid, PUT the whole status conditionally (the rare path)."""
        ref = update.task
        try:
            _, wrote = await self.kube.update_task_status(
                ref.namespace, ref.name, progress_decision(update), uid=ref.uid
            )
        except NotFound as exc:
            raise _gone(ref) from exc
        return wrote

    # ---- run_step_action -------------------------------------------------

    @activity.defn(name=RUN_STEP_ACTION)
    async def run_step_action(self, inp: StepActivityInput) -> StepResult:
        runner = _StepRun(self, inp, self.heartbeat_interval)
        return await runner.run()

    async def check_live(self, phase: str) -> None:
        """Raise (ending the activity) unless its workflow run still wants it."""
        if self.run_guard is None:
            return
        why = await self.run_guard(activity.info())
        if why is not None:
            raise ApplicationError(
                f"not sending {phase}: {why}",
                type=ERR_NOT_LIVE,
                non_retryable=True,
                category=ApplicationErrorCategory.BENIGN,
            )


class _StepRun:
    """One execution of run_step_action: heartbeats, cancellation checks, BMC calls."""

    def __init__(self, acts: TaskActivities, inp: StepActivityInput, interval: float) -> None:
        self.acts = acts
        self.inp = inp
        self.interval = max(0.05, interval)
        self.target = inp.component  # a hint: run() replaces what matters from the rack
        self.resolved: Target | None = None
        self.phase = "starting"
        self.bmc_requests = 0
        self.resets = 0
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

    async def bmc(self, phase: str, fn: Callable[..., T], *args: Any, mutating: bool = False) -> T:
        """One BMC request in a thread; never started once the activity is cancelled.

        A mutating request (a Reset) first asks Temporal whether the workflow
        run still wants this activity: a terminated workflow sends no Reset.
        """
        self.phase = phase
        self.ensure_not_cancelled()
        self.heartbeat()
        if mutating:
            await self.beating(self.acts.check_live(phase))
            self.ensure_not_cancelled()
            self.resets += 1
        self.bmc_requests += 1
        try:
            return await self.beating(asyncio.to_thread(fn, *args))
        except BmcAuthFailed as exc:
            assert self.resolved is not None
            raise ApplicationError(
                f"BMC {self.resolved.endpoint} refused the credentials of secret"
                f" {self.resolved.namespace}/{self.resolved.secret_name}",
                type=ERR_AUTH,
                non_retryable=True,
            ) from exc
        except BmcRefused as exc:
            raise ApplicationError(exc.message, type=ERR_REFUSED, non_retryable=True) from exc
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
        self.phase = "checking the task"
        workflow_id = activity.info().workflow_id or ""
        if action.type == ActionType.SLEEP:
            # Sleep steps are workflow timers (workflows.py), never activities.
            raise ApplicationError(
                "Sleep is not an activity", type="UnsupportedAction", non_retryable=True
            )
        driver = await self.driver(workflow_id)
        assert self.resolved is not None
        sid = self.resolved.system_id
        if action.type == ActionType.POWER_CONTROL:
            assert action.power is not None
            await self.power_control(driver, sid, action.power)
            sent = self.resets > 0 or activity.info().attempt > 1
            if action.expected_state is None:
                return StepResult(component_id=self.target.id, reset_sent=sent)
            state = await self.await_state(driver, sid, action.expected_state)
            return StepResult(component_id=self.target.id, power_state=state, reset_sent=sent)
        if action.type == ActionType.VERIFY_POWER_STATUS:
            assert action.expected_state is not None
            state = await self.await_state(driver, sid, action.expected_state)
            return StepResult(component_id=self.target.id, power_state=state)
        raise ApplicationError(
            f"unsupported action type {action.type}", type="UnsupportedAction", non_retryable=True
        )

    async def driver(self, workflow_id: str) -> PowerDriver:
        self.phase = "reading the task, rack and credentials"
        target = await self.beating(
            self.acts.targets.target(
                self.inp.task, workflow_id, self.inp.component.id, self.inp.action
            )
        )
        self.resolved = target
        return self.acts.redfish(target.endpoint, target.username, target.password, target.verify)

    async def power_control(self, driver: PowerDriver, sid: str | None, power: PowerAction) -> None:
        if power == PowerAction.POWER_CYCLE:
            allowed = await self.bmc("allowed resets", driver.allowed_resets, sid)
            if PowerAction.POWER_CYCLE in allowed:
                await self.bmc(
                    "reset PowerCycle", driver.reset, sid, PowerAction.POWER_CYCLE, mutating=True
                )
                return
            # No PowerCycle on this BMC: ForceOff, wait for Off, then On.
            state = await self.bmc("power state", driver.power_state, sid)
            if state != PowerState.OFF:
                await self.bmc(
                    "reset ForceOff", driver.reset, sid, PowerAction.FORCE_OFF, mutating=True
                )
                await self.await_state(driver, sid, PowerState.OFF)
            await self.bmc("reset On", driver.reset, sid, PowerAction.ON, mutating=True)
            return
        if power in (PowerAction.ON, PowerAction.FORCE_OFF, PowerAction.GRACEFUL_SHUTDOWN):
            # Idempotent: a retry (or a rack already in the state) sends nothing.
            want = PowerState.ON if power == PowerAction.ON else PowerState.OFF
            state = await self.bmc("power state", driver.power_state, sid)
            if state == want:
                return
        await self.bmc(f"reset {power.value}", driver.reset, sid, power, mutating=True)

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
