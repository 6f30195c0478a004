"""NicoTaskWorkflow: run one operation rule against a rack. Deterministic, no I/O.

Stages run in ascending order; the steps of a stage run in parallel; within
a step one activity per component, at most maxParallel at a time (0: no
limit). Each activity has the step's timeout and retry policy. Fail-fast as
upstream: the first failing step fails its stage, every other running step
of the stage is failed with the same error (its activities are cancelled),
later stages stay pending, report.error keeps the first failure.

A Sleep step is a durable workflow timer, not an activity: a waiting task
costs nothing (same report, timeout and retry behaviour as before).

The workflow publishes the report (status Running, with its version as
reportSequence) through `publish_progress`, a local activity (workflows
started before LOCAL_PROGRESS_PATCH: an activity on the task queue
`<task queue>-progress`): the plan with the first stage running in one
write (before ONE_FIRST_WRITE_PATCH: the plan, then the first stage, back to
back), then after step and stage transitions (coalesced to at most one write
per second) and at the end, never delayed; then it returns a WorkflowOutcome.
A failing rule does not fail the workflow: the outcome says Failed. The operator writes the terminal
status from the outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy as TemporalRetryPolicy
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    CancelledError,
    RetryState,
    TimeoutType,
)
from temporalio.exceptions import TimeoutError as ActivityTimeout

with workflow.unsafe.imports_passed_through():
    from nicotask.api import (
        ActionType,
        ComponentType,
        RuleStep,
        TaskReportV1,
        TaskStatus,
        first_line_error,
    )
    from nicotask.temporal import report as rep
    from nicotask.temporal.models import (
        PUBLISH_PROGRESS,
        RUN_STEP_ACTION,
        WORKFLOW_NAME,
        ComponentTarget,
        ProgressUpdate,
        StepActivityInput,
        StepResult,
        WorkflowInput,
        WorkflowOutcome,
    )

# The heartbeat timeout only detects a lost worker; the SDK throttles the
# heartbeats it sends to 0.8 x this, so a live activity costs Temporal about
# one write per 48 s. BMC resets are gated by a liveness check (liveness.py),
# not by heartbeats.
HEARTBEAT_TIMEOUT = timedelta(seconds=60)
ACTIVITY_HEARTBEAT_SECONDS = 5.0
PUBLISH_TIMEOUT = timedelta(seconds=10)
# Bounds the wait for a progress worker too (it polls its own task queue).
PUBLISH_SCHEDULE_TO_CLOSE = timedelta(seconds=60)
# At most about one progress write per task per second; the final one is never delayed.
PROGRESS_MIN_INTERVAL = timedelta(seconds=1)
PROGRESS_QUEUE_SUFFIX = "-progress"
# Workflows started by this code record this marker; older histories replay
# their old commands (Sleep activities, progress on the main queue, no
# coalescing timers).
TIMER_SLEEP_PATCH = "nicotask-timer-sleep-progress-queue"
# Workflows started by this code (and later) publish progress as local
# activities: a write is a marker in the workflow task that is running anyway,
# not an activity task with its own round trips and history events, and the
# plan and the first stage go out in the first workflow task.
LOCAL_PROGRESS_PATCH = "nicotask-local-progress"
# Workflows started by this code (and later) make one first write: the plan with
# the first stage already running, instead of the plan (all pending) and then
# the first stage back to back. A status write is the API server's costliest
# call in a start (schema, CEL and managed fields on the whole report).
ONE_FIRST_WRITE_PATCH = "nicotask-one-first-write"
PUBLISH_RETRY = TemporalRetryPolicy(
    initial_interval=timedelta(milliseconds=200),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=2),
    maximum_attempts=4,
)
ONE_ATTEMPT = TemporalRetryPolicy(maximum_attempts=1)
SUCCEEDED_MESSAGE = "Succeeded"
# Time kept before Temporal's execution timeout to stop a stage and report cleanly.
EXECUTION_RESERVE = timedelta(seconds=15)


class StepFailed(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def retry_policy(step: RuleStep) -> TemporalRetryPolicy:
    r = step.retry
    initial = timedelta(seconds=r.initial_interval_seconds)
    return TemporalRetryPolicy(
        initial_interval=initial,
        backoff_coefficient=r.backoff_coefficient,
        maximum_interval=max(initial, timedelta(seconds=r.max_interval_seconds)),
        maximum_attempts=r.max_attempts,
    )


def describe_failure(err: ActivityError, step: RuleStep, target: ComponentTarget) -> str:
    """One line: which component failed and why, e.g. `Compute c-1: BMC ... unreachable`."""
    cause = err.cause
    if isinstance(cause, ApplicationError):
        why = cause.message
    elif isinstance(cause, ActivityTimeout):
        if cause.type == TimeoutType.HEARTBEAT:
            why = "activity stopped heartbeating (worker lost?)"
        elif cause.type == TimeoutType.START_TO_CLOSE:
            why = f"timed out after {step.timeout_seconds:g}s"
        else:
            why = f"timed out ({cause.type.name if cause.type else 'unknown'})"
    elif cause is not None:
        why = str(cause) or type(cause).__name__
    else:
        why = str(err) or "activity failed"
    text = f"{step.component_type.value} {target.id}: {why}"
    if err.retry_state == RetryState.MAXIMUM_ATTEMPTS_REACHED and step.retry.max_attempts > 1:
        text += f" (gave up after {step.retry.max_attempts} attempts)"
    return first_line_error(text)


async def _cancel_all(tasks: list[asyncio.Task[None]]) -> None:
    pending = [t for t in tasks if not t.done()]
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.gather(*pending, return_exceptions=True)


def _is_cancellation(err: ActivityError) -> bool:
    return isinstance(err.cause, CancelledError)


def progress_queue(task_queue: str) -> str:
    """The task queue of publish_progress: its own slots, never behind step activities."""
    return f"{task_queue}{PROGRESS_QUEUE_SUFFIX}"


def retry_delay(step: RuleStep, attempt: int) -> timedelta:
    """Temporal's backoff before attempt `attempt + 1`."""
    r = step.retry
    seconds = r.initial_interval_seconds * r.backoff_coefficient ** (attempt - 1)
    return timedelta(seconds=min(seconds, max(r.initial_interval_seconds, r.max_interval_seconds)))


def sleep_timeout_message(step: RuleStep, target: ComponentTarget) -> str:
    """What a Sleep activity that outlived its timeout used to report, word for word."""
    text = f"{step.component_type.value} {target.id}: timed out after {step.timeout_seconds:g}s"
    if step.retry.max_attempts > 1:
        text += f" (gave up after {step.retry.max_attempts} attempts)"
    return first_line_error(text)


@workflow.defn(name=WORKFLOW_NAME)
class NicoTaskWorkflow:
    def __init__(self) -> None:
        self._report: TaskReportV1 = TaskReportV1()
        self._started: datetime | None = None
        self._version = 0
        self._published = 0
        self._closing = False
        self._stage_failure: str | None = None
        self._input: WorkflowInput | None = None
        self._timers = False
        self._local_progress = False
        self._one_first_write = False

    @workflow.query(name="report")
    def current_report(self) -> TaskReportV1:
        return self._report

    # ---- run -----------------------------------------------------------

    @workflow.run
    async def run(self, inp: WorkflowInput) -> WorkflowOutcome:
        self._input = inp
        self._started = workflow.now()
        self._read_patches()
        targets: dict[ComponentType, list[ComponentTarget]] = {}
        for target in inp.components:
            targets.setdefault(target.type, []).append(target)
        counts = {ctype: len(items) for ctype, items in targets.items()}
        self._report = rep.initial_report(inp.rule, counts)
        self._changed()
        publisher = asyncio.create_task(self._publisher())
        if not self._one_first_write:
            # Older runs: the CR shows the plan (all pending or skipped) before
            # anything runs. Now the publisher's first write, made after the first
            # stage started, carries the plan and that start. It normally lands
            # before any step activity starts: their commands go out when the
            # workflow task that runs the local write completes (or heartbeats,
            # if the write takes most of the workflow task timeout).
            await workflow.wait_condition(lambda: self._published >= 1)

        deadline = self._deadline(inp)
        error: str | None = None
        for number, steps in inp.rule.stages().items():
            if not rep.runnable_steps(self._report, number):
                continue  # skipped stage: nothing of its types in the rack
            error = await self._run_stage(number, steps, targets, deadline)
            if error is not None:
                break

        finished = workflow.now()
        self._closing = True
        await publisher  # its last act: publish the final report
        if error is None:
            return WorkflowOutcome(
                status=TaskStatus.SUCCEEDED,
                message=SUCCEEDED_MESSAGE,
                report=self._report,
                started=self._started,
                finished=finished,
                report_sequence=self._version,
            )
        return WorkflowOutcome(
            status=TaskStatus.FAILED,
            message=first_line_error(error),
            report=self._report,
            started=self._started,
            finished=finished,
            report_sequence=self._version,
        )

    def _read_patches(self) -> None:
        """Which version started this run. The newest patch implies the older ones,
        so a new run records one patch marker (and one TemporalChangeVersion
        search-attribute upsert) instead of three; a run of an older version
        finds the newest marker missing and checks the older ones as it did."""
        if workflow.patched(ONE_FIRST_WRITE_PATCH):
            self._timers = self._local_progress = self._one_first_write = True
            return
        self._timers = workflow.patched(TIMER_SLEEP_PATCH)
        self._local_progress = self._timers and workflow.patched(LOCAL_PROGRESS_PATCH)

    def _deadline(self, inp: WorkflowInput) -> datetime:
        """When the task times out: workflowTimeoutSeconds after start, but always
        early enough, before Temporal's own execution timeout (if one was set), to
        cancel the stage, publish the final report and return an outcome.
        """
        assert self._started is not None
        deadline = self._started + timedelta(seconds=inp.workflow_timeout_seconds)
        info = workflow.info()
        if info.execution_timeout is not None:
            total = info.execution_timeout
            reserve = min(EXECUTION_RESERVE, total / 4)
            deadline = min(deadline, info.workflow_start_time + total - reserve)
        return deadline

    # ---- stages and steps --------------------------------------------

    async def _run_stage(
        self,
        number: int,
        steps: list[RuleStep],
        targets: dict[ComponentType, list[ComponentTarget]],
        deadline: datetime,
    ) -> str | None:
        """Run one stage; return the first failure, or None when it completed."""
        self._stage_failure = None
        self._report = rep.start_stage(self._report, number, workflow.now())
        self._changed()
        runnable = rep.runnable_steps(self._report, number)
        done = dict.fromkeys(runnable, False)
        tasks = [
            asyncio.create_task(
                self._step_runner(
                    number, idx, steps[idx], targets.get(steps[idx].component_type, []), done
                )
            )
            for idx in runnable
        ]
        left = (deadline - workflow.now()).total_seconds()
        try:
            if left <= 0:
                raise TimeoutError
            await workflow.wait_condition(
                lambda: self._stage_failure is not None or all(done.values()),
                timeout=timedelta(seconds=left),
            )
        except asyncio.CancelledError:
            # The workflow itself was cancelled: stop every activity of the stage.
            await _cancel_all(tasks)
            raise
        except TimeoutError:
            assert self._started is not None
            limit = (deadline - self._started).total_seconds()
            message = f"task timed out after {limit:.0f}s"
            if self._stage_failure is None:
                self._stage_failure = message
                self._report = rep.fail_stage(self._report, number, message, workflow.now())
                self._changed()
        if self._stage_failure is not None:
            await _cancel_all(tasks)
            return self._stage_failure
        self._report = rep.complete_stage(self._report, number, workflow.now())
        self._changed()
        return None

    async def _step_runner(
        self,
        number: int,
        idx: int,
        step: RuleStep,
        targets: list[ComponentTarget],
        done: dict[int, bool],
    ) -> None:
        try:
            await self._run_step(step, targets)
        except StepFailed as failure:
            if self._stage_failure is None:
                self._stage_failure = failure.message
                self._report = rep.fail_step(
                    self._report, number, idx, failure.message, workflow.now()
                )
                self._changed()
            return
        done[idx] = True
        if self._stage_failure is None:
            self._report = rep.complete_step(self._report, number, idx, workflow.now())
            self._changed()

    async def _run_step(self, step: RuleStep, targets: list[ComponentTarget]) -> None:
        """One activity per component, at most maxParallel at once; first failure wins."""
        assert self._input is not None
        if step.action.type == ActionType.SLEEP and self._timers:
            await self._sleep_step(step, targets)
            return
        task_ref = self._input.task
        limit = step.max_parallel if step.max_parallel > 0 else max(1, len(targets))
        cancellation = (
            # Fail-fast moves on at once; the activity's resets are gated on liveness.
            workflow.ActivityCancellationType.TRY_CANCEL
            if self._timers
            else workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED
        )
        gate = asyncio.Semaphore(limit)
        errors: list[str] = []
        finished: list[int] = [0]

        async def one(target: ComponentTarget) -> None:
            try:
                async with gate:
                    if errors:
                        return  # the step already failed: start nothing new
                    await workflow.execute_activity(
                        RUN_STEP_ACTION,
                        StepActivityInput(
                            task=task_ref,
                            component=target,
                            action=step.action,
                            heartbeat_seconds=ACTIVITY_HEARTBEAT_SECONDS,
                        ),
                        result_type=StepResult,
                        start_to_close_timeout=timedelta(seconds=step.timeout_seconds),
                        heartbeat_timeout=HEARTBEAT_TIMEOUT,
                        retry_policy=retry_policy(step),
                        cancellation_type=cancellation,
                        summary=f"{step.action.type.value} {step.component_type.value} {target.id}",
                    )
            except ActivityError as err:
                if not _is_cancellation(err):
                    errors.append(describe_failure(err, step, target))
            finally:
                finished[0] += 1

        tasks = [asyncio.create_task(one(t)) for t in targets]
        try:
            await workflow.wait_condition(lambda: bool(errors) or finished[0] >= len(tasks))
        except asyncio.CancelledError:
            # Fail-fast from a sibling step (or the task deadline): stop our activities.
            # (Not `finally`: on cache eviction the coroutine gets GeneratorExit, and
            # must not await anything then.)
            await _cancel_all(tasks)
            raise
        await _cancel_all(tasks)
        if errors:
            raise StepFailed(errors[0])

    async def _sleep_step(self, step: RuleStep, targets: list[ComponentTarget]) -> None:
        """A Sleep step as durable timers: a waiting task costs nothing.

        Same results as one Sleep activity per component under maxParallel:
        the components sleep in waves of maxParallel; a sleep as long as the
        step's timeout times out, is retried with the rule's backoff and
        fails the step with the activity's message once attempts run out.
        """
        if not targets:
            return
        duration = float(step.action.duration_seconds or 0)
        limit = step.max_parallel if step.max_parallel > 0 else len(targets)
        for first in range(0, len(targets), limit):
            attempt = 1
            while duration >= step.timeout_seconds:
                await workflow.sleep(timedelta(seconds=step.timeout_seconds))
                if attempt >= step.retry.max_attempts:
                    raise StepFailed(sleep_timeout_message(step, targets[first]))
                await workflow.sleep(retry_delay(step, attempt))
                attempt += 1
            if duration > 0:
                await workflow.sleep(timedelta(seconds=duration))

    # ---- progress ----------------------------------------------------

    def _changed(self) -> None:
        self._version += 1

    async def _publisher(self) -> None:
        """Write the newest report, one write at a time, until closing and up to date.

        Writes never overlap, so an older snapshot can never land after a
        newer one; transitions that happen during a write are coalesced.
        A write that keeps failing is logged and skipped, never fatal.
        """
        assert self._input is not None
        queue = progress_queue(workflow.info().task_queue) if self._timers else None
        last: datetime | None = None
        while True:
            await workflow.wait_condition(lambda: self._published < self._version or self._closing)
            if self._published >= self._version:
                return
            if self._timers and last is not None and not self._closing:
                # Coalesce: at most one write per PROGRESS_MIN_INTERVAL, but the
                # final report goes out as soon as the workflow is closing.
                left = (last + PROGRESS_MIN_INTERVAL - workflow.now()).total_seconds()
                if left > 0:
                    with contextlib.suppress(TimeoutError):
                        await workflow.wait_condition(
                            lambda: self._closing, timeout=timedelta(seconds=left)
                        )
            version = self._version
            update = ProgressUpdate(
                task=self._input.task,
                report=self._report,
                started=self._started,
                sequence=version,
            )
            # Older runs: the plan's write does not delay the next one, the first
            # stage's start follows at once, in the same workflow task.
            plan_only = self._local_progress and not self._one_first_write and self._published == 0
            last = None if plan_only else workflow.now()
            try:
                await self._publish(update, queue)
            except (ActivityError, ApplicationError) as err:
                # (A local activity's last failure arrives as its ApplicationError.)
                workflow.logger.warning(
                    "could not publish the report of %s/%s: %s",
                    self._input.task.namespace,
                    self._input.task.name,
                    err.cause or err,
                )
            self._published = version

    async def _publish_local(self, update: ProgressUpdate) -> None:
        """A local activity (its own slots on this worker, never behind step activities).

        One attempt each, retried here with PUBLISH_RETRY's backoff as a timer:
        the SDK core leaks each local retry's start-to-close timer, which can
        cancel a later attempt (temporalio/sdk-rust#1454).
        """
        policy = PUBLISH_RETRY
        delay = policy.initial_interval
        attempt = 1
        while True:
            try:
                await workflow.execute_local_activity(
                    PUBLISH_PROGRESS,
                    update,
                    result_type=bool,
                    start_to_close_timeout=PUBLISH_TIMEOUT,
                    retry_policy=ONE_ATTEMPT,
                    summary=f"report v{update.sequence}",
                )
                return
            except (ActivityError, ApplicationError):
                if attempt >= policy.maximum_attempts:
                    raise
            await workflow.sleep(delay)
            attempt += 1
            delay = min(delay * policy.backoff_coefficient, policy.maximum_interval or delay)

    async def _publish(self, update: ProgressUpdate, queue: str | None) -> None:
        if self._local_progress:
            await self._publish_local(update)
            return
        await workflow.execute_activity(
            PUBLISH_PROGRESS,
            update,
            result_type=bool,
            task_queue=queue,
            start_to_close_timeout=PUBLISH_TIMEOUT,
            schedule_to_close_timeout=PUBLISH_SCHEDULE_TO_CLOSE if queue else None,
            retry_policy=PUBLISH_RETRY,
            summary=f"report v{update.sequence}",
        )
