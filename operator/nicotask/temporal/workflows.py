"""NicoTaskWorkflow: run one operation rule against a rack. Deterministic, no I/O.

Stages run in ascending order; the steps of a stage run in parallel; within
a step one activity per component, at most maxParallel at a time (0: no
limit). Each activity has the step's timeout and retry policy. Fail-fast as
upstream: the first failing step fails its stage, every other running step
of the stage is failed with the same error (its activities are cancelled),
later stages stay pending, report.error keeps the first failure.

A Sleep step is a durable workflow timer, not an activity: a waiting task
costs nothing.

Stopping early (docs/cancel.md):
- a Temporal cancel request is a graceful stop: the running stage finishes,
  the later stages are skipped, the rule's cleanup stages run (bounded by
  cleanupTimeoutSeconds), and the outcome is Terminated (Failed if the stage
  or the cleanup failed);
- the task's own deadline (spec.deadline) stops it the same way, or at once
  when its mode is Terminate (the running stage's activities are cancelled),
  and the outcome is Failed;
- a terminate (the operator's hard stop) ends the workflow where it is.

The workflow publishes the report (status Running, with its version as
reportSequence) through `publish_progress`, a local activity: the plan with
the first stage running in one write, then after step and stage transitions
(coalesced to at most one write per second) and at the end, never delayed;
then it returns a WorkflowOutcome. A failing rule does not fail the
workflow: the outcome says Failed. The operator writes the terminal status
from the outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime, timedelta
from typing import TypeVar

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

# How a failed progress write (a local activity) reaches the workflow. A write that
# timed out (start-to-close) arrives as ActivityError(cause=TimeoutError) when it
# happens, but as a bare TimeoutError when a worker replays its marker: catching only
# the first made a replay take another path than the first run (no retry timer), a
# nondeterminism error that left the task Running for good (found by the fault soak).
PUBLISH_FAILURES = (ActivityError, ApplicationError, ActivityTimeout)

with workflow.unsafe.imports_passed_through():
    from nicotask.api import (
        CLEANUP_STAGE_OFFSET,
        ActionType,
        CleanupStep,
        CleanupTargets,
        ComponentType,
        ReportStatus,
        RuleStep,
        StopMode,
        TaskDeadline,
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
        StopRequest,
        WorkflowInput,
        WorkflowOutcome,
    )

# The heartbeat timeout only detects a lost worker; the SDK throttles the
# heartbeats it sends to 0.8 x this, so a live activity costs Temporal about
# one write per 48 s. BMC resets are gated by a run guard (run_guard.py),
# not by heartbeats.
HEARTBEAT_TIMEOUT = timedelta(seconds=60)
ACTIVITY_HEARTBEAT_SECONDS = 5.0
PUBLISH_TIMEOUT = timedelta(seconds=10)
# At most about one progress write per task per second; the final one is never delayed.
PROGRESS_MIN_INTERVAL = timedelta(seconds=1)
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


T = TypeVar("T")


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


def retry_delay(step: RuleStep, attempt: int) -> timedelta:
    """Temporal's backoff before attempt `attempt + 1`."""
    r = step.retry
    seconds = r.initial_interval_seconds * r.backoff_coefficient ** (attempt - 1)
    return timedelta(seconds=min(seconds, max(r.initial_interval_seconds, r.max_interval_seconds)))


def sleep_timeout_message(step: RuleStep, target: ComponentTarget) -> str:
    """A Sleep as long as its step's timeout: worded like an activity that timed out."""
    text = f"{step.component_type.value} {target.id}: timed out after {step.timeout_seconds:g}s"
    if step.retry.max_attempts > 1:
        text += f" (gave up after {step.retry.max_attempts} attempts)"
    return first_line_error(text)


def deadline_of(deadline: TaskDeadline, started: datetime) -> tuple[datetime, str]:
    """When the task's own deadline runs out (the earlier of its bounds), and which."""
    ends: list[tuple[datetime, str]] = []
    if deadline.active_seconds is not None:
        ends.append(
            (
                started + timedelta(seconds=deadline.active_seconds),
                f"deadline ran out (activeSeconds {deadline.active_seconds})",
            )
        )
    if deadline.not_after is not None:
        ends.append(
            (
                deadline.not_after,
                f"deadline ran out (notAfter {deadline.not_after:%Y-%m-%dT%H:%M:%SZ})",
            )
        )
    return min(ends, key=lambda end: end[0])


def _stage_list(numbers: list[int]) -> str:
    return ", ".join(str(n) for n in numbers)


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
        # A graceful stop (cancel request or deadline): checked between stages.
        self._stop: StopRequest | None = None
        # A deadline in Terminate mode: ends the running stage at once.
        self._hard_stop: str | None = None
        # Components this task sent (or may have sent) a state-changing request to.
        self._acted_on: set[str] = set()

    @workflow.query(name="report")
    def current_report(self) -> TaskReportV1:
        return self._report

    # ---- run -----------------------------------------------------------

    @workflow.run
    async def run(self, inp: WorkflowInput) -> WorkflowOutcome:
        self._input = inp
        self._started = workflow.now()
        targets: dict[ComponentType, list[ComponentTarget]] = {}
        for target in inp.components:
            targets.setdefault(target.type, []).append(target)
        counts = {ctype: len(items) for ctype, items in targets.items()}
        self._report = rep.initial_report(inp.rule, counts)
        self._changed()
        publisher = asyncio.create_task(self._publisher())
        watchdog = asyncio.create_task(self._watch_deadline(inp.deadline)) if inp.deadline else None

        execution = asyncio.create_task(self._execute(inp, targets))
        status, message = await self._unless_cancelled(execution)
        if watchdog is not None:
            watchdog.cancel()

        finished = workflow.now()
        self._closing = True
        await self._unless_cancelled(publisher)  # its last act: publish the final report
        return WorkflowOutcome(
            status=status,
            message=first_line_error(message),
            report=self._report,
            started=self._started,
            finished=finished,
            report_sequence=self._version,
        )

    async def _execute(
        self, inp: WorkflowInput, targets: dict[ComponentType, list[ComponentTarget]]
    ) -> tuple[TaskStatus, str]:
        """The rule's stages, then (after a graceful stop) its cleanup; the outcome."""
        deadline = self._deadline(inp)
        error: str | None = None
        ran: list[int] = []
        for number, steps in inp.rule.stages().items():
            if self._stop is not None or self._hard_stop is not None:
                break
            if not rep.runnable_steps(self._report, number):
                continue  # skipped stage: nothing of its types in the rack
            ran.append(number)
            error = await self._run_stage(
                number, steps, targets, deadline, self._timeout_message(deadline)
            )
            if error is not None:
                break
        stop = self._stop
        if self._hard_stop is not None:
            return TaskStatus.FAILED, f"{self._hard_stop}: stopped at once, no cleanup"
        if stop is None:
            if error is None:
                return TaskStatus.SUCCEEDED, SUCCEEDED_MESSAGE
            return TaskStatus.FAILED, error

        # Stopped gracefully: nothing later runs; the cleanup leaves the rack known.
        skipped = [s.number for s in self._report.stages if s.status == ReportStatus.PENDING]
        self._report = rep.skip_pending(self._report)
        self._changed()
        cleanup_error = await self._run_cleanup(inp.rule.cleanup_stages(), inp, targets)
        summary = self._stop_summary(stop, ran, skipped, cleanup_error)
        if error is not None:
            return TaskStatus.FAILED, f"{error} ({summary})"
        if cleanup_error is not None:
            return TaskStatus.FAILED, f"cleanup failed: {cleanup_error} ({summary})"
        if stop.by_deadline:
            return TaskStatus.FAILED, summary
        return TaskStatus.TERMINATED, summary

    async def _unless_cancelled(self, task: asyncio.Task[T]) -> T:
        """Await `task` shielded: Temporal's cancel request (delivered to this, the run
        coroutine, whenever it comes, and once per request) becomes a graceful stop
        instead of cancelling the stage, the cleanup or the final write."""
        while not task.done():
            try:
                await asyncio.shield(task)
            except asyncio.CancelledError:
                self._request_stop(StopRequest("", True, by_deadline=False))
                current = asyncio.current_task()
                if current is not None:
                    current.uncancel()
        return task.result()

    def _stop_summary(
        self, stop: StopRequest, ran: list[int], skipped: list[int], cleanup_error: str | None
    ) -> str:
        text = f"{stop.why}: stopped gracefully" if stop.why else "Stopped gracefully"
        if ran:
            text += f" after stage {ran[-1]}"
        if skipped:
            text += f", skipped stage{'s' if len(skipped) > 1 else ''} {_stage_list(skipped)}"
        cleanup = [s for s in self._report.stages if s.number > CLEANUP_STAGE_OFFSET]
        ran_cleanup = [s for s in cleanup if s.status != ReportStatus.SKIPPED]
        if cleanup_error is not None:
            text += "; cleanup failed"
        elif ran_cleanup:
            text += "; cleanup completed"
        elif cleanup:
            text += "; cleanup had nothing to do"
        return text

    def _stopping_message(self) -> str | None:
        """status.message while a graceful stop is under way (None: plain Running)."""
        if self._stop is None or self._closing:
            return None
        why = f"{self._stop.why}: " if self._stop.why else ""
        if any(s.number > CLEANUP_STAGE_OFFSET for s in self._report.stages):
            return f"{why}stopping gracefully: running the rule's cleanup"
        return f"{why}stopping gracefully: the running stage finishes, later stages are skipped"

    def _request_stop(self, request: StopRequest) -> None:
        if self._stop is None:
            self._stop = request
            self._changed()  # the CR says it is stopping

    async def _watch_deadline(self, deadline: TaskDeadline) -> None:
        """One durable timer: when the task's own deadline runs out, stop it."""
        assert self._started is not None
        ends, why = deadline_of(deadline, self._started)
        left = (ends - workflow.now()).total_seconds()
        if left > 0:
            await workflow.sleep(timedelta(seconds=left))
        if deadline.stop == StopMode.TERMINATE:
            self._hard_stop = why
        else:
            self._request_stop(StopRequest(why, True, by_deadline=True))

    def _deadline(self, inp: WorkflowInput) -> datetime:
        """When the rule times out: workflowTimeoutSeconds after start, but always
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

    def _timeout_message(self, deadline: datetime) -> str:
        assert self._started is not None
        return f"task timed out after {(deadline - self._started).total_seconds():.0f}s"

    # ---- cleanup -------------------------------------------------------

    async def _run_cleanup(
        self,
        stages: dict[int, list[CleanupStep]],
        inp: WorkflowInput,
        targets: dict[ComponentType, list[ComponentTarget]],
    ) -> str | None:
        """The rule's cleanup stages, in order, within cleanupTimeoutSeconds; first failure."""
        if not stages:
            return None
        timeout = inp.rule.cleanup_timeout_seconds
        deadline = workflow.now() + timedelta(seconds=timeout)
        for number, steps in stages.items():
            picked = {step.component_type: self._cleanup_targets(step, targets) for step in steps}
            counts = {ctype: len(items) for ctype, items in picked.items()}
            self._report = rep.add_stage(
                self._report, number, [s.component_type for s in steps], counts
            )
            self._changed()
            if not rep.runnable_steps(self._report, number):
                continue
            error = await self._run_stage(
                number,
                list(steps),
                picked,
                deadline,
                f"cleanup timed out after {timeout:g}s",
            )
            if error is not None:
                self._report = rep.skip_pending(self._report)
                return error
        return None

    def _cleanup_targets(
        self, step: CleanupStep, targets: dict[ComponentType, list[ComponentTarget]]
    ) -> list[ComponentTarget]:
        of_type = targets.get(step.component_type, [])
        if step.targets == CleanupTargets.ALL:
            return list(of_type)
        return [t for t in of_type if t.id in self._acted_on]

    # ---- stages and steps --------------------------------------------

    async def _run_stage(
        self,
        number: int,
        steps: list[RuleStep],
        targets: dict[ComponentType, list[ComponentTarget]],
        deadline: datetime,
        timeout_message: str,
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
                lambda: (
                    self._stage_failure is not None
                    or self._hard_stop is not None
                    or all(done.values())
                ),
                timeout=timedelta(seconds=left),
            )
        except asyncio.CancelledError:
            # Cache eviction or a failing sibling: stop every activity of the stage.
            await _cancel_all(tasks)
            raise
        except TimeoutError:
            if self._stage_failure is None:
                self._stage_failure = timeout_message
                self._report = rep.fail_stage(self._report, number, timeout_message, workflow.now())
                self._changed()
        if self._stage_failure is None and self._hard_stop is not None and not all(done.values()):
            self._stage_failure = self._hard_stop
            self._report = rep.fail_stage(self._report, number, self._hard_stop, workflow.now())
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
        if step.action.type == ActionType.SLEEP:
            await self._sleep_step(step, targets)
            return
        task_ref = self._input.task
        limit = step.max_parallel if step.max_parallel > 0 else max(1, len(targets))
        gate = asyncio.Semaphore(limit)
        errors: list[str] = []
        finished: list[int] = [0]

        async def one(target: ComponentTarget) -> None:
            try:
                async with gate:
                    if errors:
                        return  # the step already failed: start nothing new
                    result = await workflow.execute_activity(
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
                        # Fail-fast moves on at once; the run guard gates the activity's resets.
                        cancellation_type=workflow.ActivityCancellationType.TRY_CANCEL,
                        summary=f"{step.action.type.value} {step.component_type.value} {target.id}",
                    )
                if result.reset_sent:
                    self._acted_on.add(target.id)
            except ActivityError as err:
                if step.action.type == ActionType.POWER_CONTROL:
                    self._acted_on.add(target.id)  # it may have sent one: count it
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
        fails the step once attempts run out.
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
        last: datetime | None = None
        while True:
            await workflow.wait_condition(lambda: self._published < self._version or self._closing)
            if self._published >= self._version:
                return
            if last is not None and not self._closing:
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
                message=self._stopping_message(),
            )
            last = workflow.now()
            try:
                await self._publish(update)
            except PUBLISH_FAILURES as err:
                # (A local activity's last failure arrives as its ApplicationError.)
                workflow.logger.warning(
                    "could not publish the report of %s/%s: %s",
                    self._input.task.namespace,
                    self._input.task.name,
                    err.cause or err,
                )
            self._published = version

    async def _publish(self, update: ProgressUpdate) -> None:
        """A local activity: a marker in the workflow task that runs anyway, with its
        own slots on this worker, never behind step activities.

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
            except PUBLISH_FAILURES:
                if attempt >= policy.maximum_attempts:
                    raise
            await workflow.sleep(delay)
            attempt += 1
            delay = min(delay * policy.backoff_coefficient, policy.maximum_interval or delay)
