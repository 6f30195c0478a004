"""The NicoTask lifecycle: start, queue, follow, cancel, finalize.

Each entry point reads the task fresh, decides with the pure functions of
state.py, acts, and writes status through Kube.update_task_status (the
conditional writer). Entry points for one task are serialized by a per-task
lock, so a cancel can never interleave with a start or a finish; any of them
may be repeated after a crash and converges.

Who writes what:
- the operator writes Pending, Waiting and every terminal status (from what
  Temporal recorded, or from its own confirmed terminate);
- the worker writes Running and the live report while the workflow runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from temporalio.client import Client

from nicotask import api, state
from nicotask.api import NicoTask, TaskStatus
from nicotask.kube import Kube, NotFound
from nicotask.metrics import Metrics
from nicotask.rules import RuleNotFound, resolve_rule
from nicotask.settings import Settings
from nicotask.temporal.models import build_workflow_input
from nicotask.workflow_control import (
    Observed,
    TemporalUnavailable,
    TerminateResult,
    observe,
    start_workflow,
    terminate,
)

log = logging.getLogger(__name__)


class RetryLater(Exception):
    """The action could not complete now (Temporal unreachable); retry after `delay`."""

    def __init__(self, message: str, delay: float) -> None:
        super().__init__(message)
        self.delay = delay


RackKey = tuple[str, str]


@dataclass
class Controller:
    kube: Kube
    temporal: Callable[[], Awaitable[Client]]
    settings: Settings
    metrics: Metrics
    _task_locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    _rack_locks: dict[RackKey, asyncio.Lock] = field(default_factory=dict)
    _rack_freed: dict[RackKey, asyncio.Event] = field(default_factory=dict)

    # ---- plumbing ----------------------------------------------------------

    def _lock(self, uid: str) -> asyncio.Lock:
        return self._task_locks.setdefault(uid, asyncio.Lock())

    def forget(self, uid: str) -> None:
        self._task_locks.pop(uid, None)

    async def _read(self, namespace: str, name: str) -> NicoTask | None:
        try:
            return await self.kube.get_task(namespace, name)
        except NotFound:
            return None

    @contextlib.asynccontextmanager
    async def _exclusive(
        self, namespace: str, name: str, uid: str | None = None
    ) -> AsyncIterator[NicoTask | None]:
        """The task read fresh under its lock (None: it is gone, or is another object)."""
        if uid is None:
            first = await self._read(namespace, name)
            if first is None:
                yield None
                return
            uid = first.metadata.uid or ""
        async with self._lock(uid):
            task = await self._read(namespace, name)
            yield task if task is not None and task.metadata.uid == uid else None

    def _rack_lock(self, key: RackKey) -> asyncio.Lock:
        return self._rack_locks.setdefault(key, asyncio.Lock())

    def notify_rack_freed(self, namespace: str, rack: str) -> None:
        event = self._rack_freed.pop((namespace, rack), None)
        if event is not None:
            event.set()

    async def _wait_rack_freed(self, namespace: str, rack: str, timeout: float) -> None:
        event = self._rack_freed.setdefault((namespace, rack), asyncio.Event())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout=timeout)

    async def _write(
        self,
        task: NicoTask,
        status: TaskStatus,
        message: str | None,
        *,
        report: api.TaskReportV1 | None = None,
        extra: Callable[[api.NicoTaskStatus], None] | None = None,
    ) -> tuple[NicoTask, bool]:
        """Move the task to `status` (conditionally, on a fresh read)."""

        def decide(fresh: NicoTask) -> api.NicoTaskStatus | None:
            if not state.allowed_transition(fresh.status.status, status):
                return None
            new = state.with_status(fresh, status, message, report=report)
            if extra is not None:
                extra(new)
            return new

        ns, name = task.metadata.namespace or "", task.metadata.name
        written, changed = await self.kube.update_task_status(
            ns, name, decide, uid=task.metadata.uid, current=task
        )
        if changed and state.is_terminal(status):
            self.notify_rack_freed(ns, task.spec.rack_ref)
            self.metrics.finished(status)
        return written, changed

    # ---- start ---------------------------------------------------------------

    async def start(self, namespace: str, name: str) -> None:
        """On create and resume (and on promotion): admit and start, queue, or refuse."""
        task = await self._read(namespace, name)
        if task is None:
            return
        if not task.spec.cancel:
            async with self._exclusive(namespace, name, task.metadata.uid) as fresh:
                if fresh is None or state.is_terminal(fresh.status.status):
                    return
                if fresh.status.run_id is not None:
                    return  # started already; the follower watches it
                if not fresh.spec.cancel:
                    await self._admit(fresh)
                    return
        await self.cancel(namespace, name)

    async def _admit(self, task: NicoTask) -> None:
        ns = task.metadata.namespace or ""
        if task.status.id is None:
            task, _ = await self._write(task, TaskStatus.PENDING, "Pending")
        try:
            rack = api.NicoRack.model_validate(
                await self.kube.get("nicoracks", task.spec.rack_ref, ns)
            )
        except NotFound:
            await self._fail(task, f"NicoRack {task.spec.rack_ref} not found in namespace {ns}")
            return
        if rack.spec.site_id.lower() != task.spec.site_id.lower():
            await self._fail(
                task,
                f"rack {task.spec.rack_ref} belongs to site {rack.spec.site_id}, "
                f"not {task.spec.site_id}",
            )
            return
        rules = [
            api.NicoOperationRule.model_validate(r)
            for r in await self.kube.list_objects("nicooperationrules", ns)
        ]
        try:
            resolved = resolve_rule(task.spec, rack, rules)
        except RuleNotFound as exc:
            await self._fail(task, str(exc))
            return

        key = (ns, task.spec.rack_ref)
        async with self._rack_lock(key):
            siblings = await self.kube.tasks_on_rack(ns, task.spec.rack_ref)
            decision = state.admission(
                state.QueueEntry.of(task),
                [state.QueueEntry.of(t) for t in siblings],
                self.settings.queue_limit,
            )
            if decision is state.Admission.REJECT:
                await self._fail(task, state.conflict_message(task.spec.rack_ref))
                return
            if decision is state.Admission.WAIT:
                if task.status.status != TaskStatus.WAITING:

                    def keep_rule(s: api.NicoTaskStatus) -> None:
                        s.rule_id = resolved.rule_id

                    await self._write(
                        task, TaskStatus.WAITING, state.QUEUED_MESSAGE, extra=keep_rule
                    )
                    await self.kube.create_event(task, "Queued", state.QUEUED_MESSAGE)
                return
            # Admitted: one more fresh read so a cancel seen now means "never start".
            task = await self.kube.get_task(ns, task.metadata.name)
            if task.spec.cancel or state.is_terminal(task.status.status):
                return
            workflow_input = build_workflow_input(task, rack, resolved.rule_id, resolved.spec)
            client = await self.temporal()
            try:
                run_id = await start_workflow(client, self.settings.task_queue, workflow_input)
            except TemporalUnavailable as exc:
                raise RetryLater(f"Temporal unreachable while starting: {exc}", 5.0) from exc
            await self._record_start(task, resolved.rule_id, run_id)
        await self.kube.create_event(
            task, "Started", f"workflow {task.metadata.uid} started (rule {resolved.rule_id})"
        )

    async def _record_start(self, task: NicoTask, rule_id: str, run_id: str) -> None:
        def decide(fresh: NicoTask) -> api.NicoTaskStatus | None:
            if state.is_terminal(fresh.status.status):
                return None
            current = fresh.status.status
            # The worker may already have written Running: never step back.
            target = current if current == TaskStatus.RUNNING else TaskStatus.PENDING
            message = fresh.status.message if target == TaskStatus.RUNNING else "Pending"
            new = state.with_status(fresh, target, message)
            new.rule_id = rule_id
            new.workflow_id = fresh.metadata.uid
            new.run_id = run_id
            return new

        await self.kube.update_task_status(
            task.metadata.namespace or "",
            task.metadata.name,
            decide,
            uid=task.metadata.uid,
            current=task,
        )

    async def _fail(self, task: NicoTask, message: str) -> None:
        _, changed = await self._write(task, TaskStatus.FAILED, api.first_line_error(message))
        if changed:
            await self.kube.create_event(task, "Failed", message, warning=True)

    # ---- follow (daemon) ---------------------------------------------------

    async def follow(self, namespace: str, name: str, stopped: Callable[[], bool]) -> None:
        """Until the task is finished: promote it from the queue, or watch its workflow."""
        backoff = 1.0
        while not stopped():
            try:
                task = await self.kube.get_task(namespace, name)
            except NotFound:
                return
            status = task.status
            if state.is_terminal(status.status):
                return
            try:
                if status.status == TaskStatus.WAITING:
                    await self._follow_waiting(task)
                elif status.run_id is None:
                    # Not admitted yet (or its start failed): try again shortly.
                    await self._wait_rack_freed(namespace, task.spec.rack_ref, 2.0)
                    await asyncio.shield(self.start(namespace, name))
                else:
                    await self._follow_workflow(task)
                backoff = 1.0
            except (TemporalUnavailable, RetryLater) as exc:
                log.warning("task %s/%s: %s; retrying in %.0fs", namespace, name, exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)

    async def _follow_waiting(self, task: NicoTask) -> None:
        ns = task.metadata.namespace or ""
        timeout = dt.timedelta(seconds=self.settings.queue_timeout_seconds)
        now = api.utcnow()
        if state.queue_expired(task.status, timeout, now):
            await asyncio.shield(self._expire(task))
            return
        since = task.status.waiting_since or now
        remaining = (since + timeout - now).total_seconds()
        await self._wait_rack_freed(
            ns,
            task.spec.rack_ref,
            max(0.5, min(remaining, self.settings.reconcile_interval_seconds)),
        )
        await asyncio.shield(self.start(ns, task.metadata.name))

    async def _expire(self, task: NicoTask) -> None:
        async with self._lock(task.metadata.uid or ""):
            fresh = await self.kube.get_task(task.metadata.namespace or "", task.metadata.name)
            if fresh.status.status == TaskStatus.WAITING and not fresh.spec.cancel:
                _, changed = await self._write(fresh, TaskStatus.TERMINATED, state.EXPIRED_MESSAGE)
                if changed:
                    await self.kube.create_event(fresh, "Expired", state.EXPIRED_MESSAGE)

    async def _follow_workflow(self, task: NicoTask) -> None:
        client = await self.temporal()
        wait = dt.timedelta(seconds=self.settings.reconcile_interval_seconds)
        observed = await observe(client, task.metadata.uid or "", wait=wait)
        if observed is not None and observed.running:
            return
        # Shielded: kopf stops this daemon as soon as the terminal status lands,
        # and the Event after it must still be written.
        await asyncio.shield(
            self.finish(task.metadata.namespace or "", task.metadata.name, observed)
        )

    async def finish(self, namespace: str, name: str, observed: Observed | None) -> None:
        """Write the terminal status Temporal recorded (None: the execution is gone)."""
        async with self._exclusive(namespace, name) as task:
            if task is None or state.is_terminal(task.status.status):
                return
            if observed is None:
                await self._fail(task, f"workflow {task.metadata.uid} no longer exists in Temporal")
                return
            if observed.status == TaskStatus.TERMINATED and task.spec.cancel:
                await self._write_cancelled(task)
                return
            await self._write_outcome(task, observed)

    async def _write_outcome(self, task: NicoTask, observed: Observed) -> bool:
        status = observed.status or TaskStatus.FAILED
        now = api.utcnow()
        report = observed.outcome.report if observed.outcome else task.status.report
        message = observed.message or status.value
        if status == TaskStatus.TERMINATED:
            message = f"Terminated outside nicotask: {message}"
        report = state.close_report(report, message if status != TaskStatus.SUCCEEDED else "", now)

        def stamp(s: api.NicoTaskStatus) -> None:
            if observed.outcome is not None:
                s.started = s.started or observed.outcome.started
                s.finished = observed.outcome.finished or s.finished

        _, changed = await self._write(task, status, message, report=report, extra=stamp)
        if changed:
            await self.kube.create_event(
                task, status.value, message, warning=status != TaskStatus.SUCCEEDED
            )
        return changed

    # ---- cancel --------------------------------------------------------------

    async def cancel(self, namespace: str, name: str, uid: str | None = None) -> None:
        """spec.cancel is true: terminate the workflow, then write Terminated."""
        async with self._exclusive(namespace, name, uid) as task:
            if task is None or not task.spec.cancel:
                return
            if state.is_terminal(task.status.status):
                await self._cancel_ignored(task)
                return
            by = task.metadata.annotations.get("nico.dev/cancel-requested-by")
            # Recorded with the final status; written early only if Temporal is slow.
            requested_at = task.status.cancel_requested_at or api.utcnow()
            reason = state.CANCELLED_BY_USER + (f" ({by})" if by else "")
            client = await self.temporal()
            started = time.monotonic()
            try:
                result = await terminate(
                    client, task.metadata.uid or "", task.status.run_id, reason
                )
            except TemporalUnavailable as exc:
                await self._mark_cancel_pending(
                    task,
                    by,
                    requested_at,
                    f"Temporal unreachable, retrying: {api.first_line_error(str(exc))}",
                )
                raise RetryLater(f"cancel waits for Temporal: {exc}", 3.0) from exc
            self.metrics.terminate_rpc.observe(time.monotonic() - started)
            if result in (TerminateResult.TERMINATED, TerminateResult.NEVER_STARTED):
                await self._write_cancelled(task, by, requested_at)
                return
            # It had closed before our terminate: report what Temporal recorded.
            observed = await observe(client, task.metadata.uid or "")
            if observed is None or observed.status == TaskStatus.TERMINATED:
                await self._write_cancelled(task, by, requested_at)
                return
            if await self._write_outcome(task, observed):
                fresh = await self.kube.get_task(namespace, name)
                await self._cancel_ignored(fresh)

    async def _mark_cancel_pending(
        self, task: NicoTask, by: str | None, requested_at: dt.datetime, message: str
    ) -> NicoTask:
        def decide(fresh: NicoTask) -> api.NicoTaskStatus | None:
            if state.is_terminal(fresh.status.status):
                return None
            new = fresh.status.model_copy(deep=True)
            new.cancel_requested_at = new.cancel_requested_at or requested_at
            new.cancel_requested_by = by
            new.conditions = state.set_condition(
                new.conditions,
                state.CANCEL_PENDING,
                True,
                "Terminating",
                message,
                fresh.metadata.generation,
            )
            return new

        written, _ = await self.kube.update_task_status(
            task.metadata.namespace or "",
            task.metadata.name,
            decide,
            uid=task.metadata.uid,
            current=task,
        )
        return written

    async def _write_cancelled(
        self, task: NicoTask, by: str | None = None, requested_at: dt.datetime | None = None
    ) -> None:
        now = api.utcnow()
        report = state.close_report(task.status.report, state.CANCELLED_BY_USER, now)

        def who_and_when(s: api.NicoTaskStatus) -> None:
            s.cancel_requested_at = s.cancel_requested_at or requested_at
            s.cancel_requested_by = s.cancel_requested_by or by

        written, changed = await self._write(
            task, TaskStatus.TERMINATED, state.CANCELLED_BY_USER, report=report, extra=who_and_when
        )
        if changed:
            requested = written.status.cancel_requested_at
            if requested is not None:
                self.metrics.cancel_latency.observe((now - requested).total_seconds())
            by = written.status.cancel_requested_by
            await self.kube.create_event(
                written, "Cancelled", state.CANCELLED_BY_USER + (f" by {by}" if by else "")
            )

    async def _cancel_ignored(self, task: NicoTask) -> None:
        """A cancel of a finished task changes nothing but says so, once."""
        if task.status.status == TaskStatus.TERMINATED:
            return
        if any(c.type == state.CANCEL_IGNORED for c in task.status.conditions):
            return
        reason = state.cannot_cancel_message(task.metadata.uid or "", task.status.status)
        message = f"cancel ignored: {reason}"

        def decide(fresh: NicoTask) -> api.NicoTaskStatus | None:
            new = fresh.status.model_copy(deep=True)
            new.conditions = state.set_condition(
                new.conditions,
                state.CANCEL_IGNORED,
                True,
                "TaskFinished",
                message,
                fresh.metadata.generation,
            )
            return new

        await self.kube.update_task_status(
            task.metadata.namespace or "", task.metadata.name, decide, uid=task.metadata.uid
        )
        await self.kube.create_event(task, "CancelIgnored", message, warning=True)

    # ---- delete --------------------------------------------------------------

    async def finalize(self, task: NicoTask) -> None:
        """Before a NicoTask goes away: terminate its workflow, free its rack."""
        ns = task.metadata.namespace or ""
        async with self._lock(task.metadata.uid or ""):
            if not state.is_terminal(task.status.status):
                client = await self.temporal()
                try:
                    await terminate(
                        client, task.metadata.uid or "", task.status.run_id, "NicoTask deleted"
                    )
                except TemporalUnavailable as exc:
                    raise RetryLater(f"delete waits for Temporal: {exc}", 3.0) from exc
        self.notify_rack_freed(ns, task.spec.rack_ref)
        self.forget(task.metadata.uid or "")
