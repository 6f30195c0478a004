"""The NicoTask lifecycle: admit and start, queue, cancel, finish, expire.

One reconcile per task at a time (the work queue guarantees it): take the
freshest copy of the task (LiveTasks), pick the action (decisions.next_action),
act, and write status once through Kube.update_task_status, starting from
that copy (no read first; a conflict reads and decides again).

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
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError
from temporalio.client import Client

from nicotask import api, lifecycle
from nicotask.api import NicoTask, StopMode, TaskStatus
from nicotask.kube import RACKS, RULES, Kube, NotFound
from nicotask.logs import task_context
from nicotask.metrics import Metrics
from nicotask.operator import decisions
from nicotask.operator.decisions import Action, Decide
from nicotask.operator.events import EventPoster
from nicotask.operator.leadership import Leadership
from nicotask.operator.live_tasks import LiveTasks, newest, resource_version
from nicotask.operator.retention import Retention
from nicotask.operator.workqueue import Retry, WorkQueue
from nicotask.rules import RuleNotFound, resolve_rule
from nicotask.settings import Settings
from nicotask.temporal.control import (
    TemporalUnavailable,
    TerminateResult,
    current_report,
    observe,
    request_cancel,
    start_workflow,
    terminate,
)
from nicotask.temporal.models import build_workflow_input

log = logging.getLogger(__name__)

RackKey = tuple[str, str]
TEMPORAL_RETRY = 3.0
# A workflow whose final report is out but which still runs: look again after 1 s,
# 2 s, 4 s... up to every 30 s.
SETTLED_RECHECK_S = 1.0
SETTLED_RECHECK_MAX_S = 30.0


@dataclass
class Controller:
    kube: Kube
    temporal: Callable[[], Awaitable[Client]]
    settings: Settings
    metrics: Metrics
    live_tasks: LiveTasks = field(default_factory=LiveTasks)
    racks: Any = field(default_factory=dict)  # kopf Index: (namespace, name) -> rack JSON
    rules: Any = field(default_factory=dict)  # kopf Index: namespace -> NicoOperationRule
    leadership: Leadership = field(default_factory=Leadership)  # default: always active
    _rack_locks: dict[RackKey, asyncio.Lock] = field(default_factory=dict)
    _cancel_seen: dict[str, dt.datetime] = field(default_factory=dict)
    _deleted: dict[str, NicoTask] = field(default_factory=dict)
    _finished_cancels: dict[str, NicoTask] = field(default_factory=dict)
    _settled_checks: dict[str, int] = field(default_factory=dict)  # uid -> rechecks so far

    def __post_init__(self) -> None:
        self.queue: WorkQueue[str] = WorkQueue(
            self.reconcile,
            self.settings.operator_workers,
            log_context=self._log_context,
            gate=self.leadership.wait_active,
        )
        self.events = EventPoster(self.kube)
        self.retention = Retention(self.kube, self.settings.ttl_seconds_after_finished)

    # ---- what the handlers call -------------------------------------------

    def observe_event(self, event_type: str | None, task: NicoTask) -> None:
        """A watch event of a live task (or of one leaving the watch): queue its reconcile."""
        uid = task.metadata.uid or ""
        if event_type == "DELETED":
            # A task leaving the watch comes with its last matching (live) body at
            # the new resourceVersion; our own terminal write, if we made it, says
            # why it left, so no GET (ties go to our copy).
            last = newest(self.live_tasks.get(uid), task) or task
            self.live_tasks.forget(uid)
            self._cancel_seen.pop(uid, None)  # finished or gone: no cancel to time any more
            self._settled_checks.pop(uid, None)
            if not lifecycle.is_terminal(last.status.status):
                # Deleted, or moved out of this operator's shard: tell them apart.
                self._deleted[uid] = task
                self.queue.add(uid, "deleted")
            return
        if task.spec.cancel and uid not in self._cancel_seen:
            self._cancel_seen[uid] = dt.datetime.now(dt.UTC)
        self.queue.add(uid)

    def observe_finished_cancel(self, task: NicoTask) -> None:
        """spec.cancel on a task that had already finished (watched separately)."""
        if decisions.needs_cancel_ignored(task):
            uid = task.metadata.uid or ""
            self._finished_cancels[uid] = task
            self.queue.add(uid)

    # ---- one reconcile -------------------------------------------------------

    def _log_context(self, uid: str) -> AbstractContextManager[object]:
        """Every line logged while reconciling `uid` names the task (logs.py)."""
        task = self.live_tasks.get(uid) or self._deleted.get(uid) or self._finished_cancels.get(uid)
        if task is None:
            return contextlib.nullcontext()
        return task_context(task.metadata.namespace or "", task.metadata.name, uid)

    async def reconcile(self, uid: str, hints: frozenset[str]) -> None:
        if "deleted" in hints and uid in self._deleted:
            await self._deleted_task(self._deleted.pop(uid))
            return
        # A finished task's cancel arrives on its own watch, while the live tasks may
        # still hold our older terminal write: decide from the newer copy.
        task = newest(self.live_tasks.get(uid), self._finished_cancels.pop(uid, None))
        if task is None:
            return
        now = api.utcnow()
        timeout = dt.timedelta(seconds=self.settings.queue_timeout_seconds)
        action = decisions.next_action(task, hints, timeout, now)
        if action is Action.NOTHING:
            return
        log.debug("task %s/%s: %s", task.metadata.namespace, task.metadata.name, action.value)
        handler = {
            Action.CANCEL_IGNORED: self._cancel_ignored,
            Action.CANCEL: self._cancel,
            Action.FINISH: self._finish,
            Action.EXPIRE: self._expire,
            Action.DEADLINE: self._deadline_before_start,
            Action.ADMIT: self._admit,
        }[action]
        await handler(task)

    # ---- writing ---------------------------------------------------------------

    async def _write(self, task: NicoTask, decide: Decide) -> tuple[NicoTask, bool]:
        """One conditional status write from `task` (our freshest copy)."""
        try:
            written, changed = await self.kube.update_task_status(
                task.metadata.namespace or "",
                task.metadata.name,
                decide,
                uid=task.metadata.uid,
                current=task,
            )
        except NotFound:
            return task, False
        self.live_tasks.remember(written)
        if changed and lifecycle.is_terminal(written.status.status):
            self._finished(written)
        elif decisions.finished_elsewhere(task, written, changed):
            # Another writer had finished it (a replica active a moment ago): our live tasks
            # held it live until now, so its rack was busy here; free it.
            self._promote(written.metadata.namespace or "", written.spec.rack_ref)
        return written, changed

    def _finished(self, task: NicoTask) -> None:
        uid = task.metadata.uid or ""
        self.metrics.finished(task.status.status)
        self._cancel_seen.pop(uid, None)
        self._settled_checks.pop(uid, None)
        self.retention.schedule(task)
        self._promote(task.metadata.namespace or "", task.spec.rack_ref)

    def _promote(self, namespace: str, rack: str) -> None:
        """The rack is free: let its queued tasks decide again, first in line first."""
        waiting = [
            t
            for t in self.live_tasks.on_rack(namespace, rack)
            if not lifecycle.is_terminal(t.status.status) and t.status.run_id is None
        ]
        for t in sorted(waiting, key=lambda t: lifecycle.QueueEntry.of(t).queue_key()):
            self.queue.add(t.metadata.uid or "")

    async def _fail(self, task: NicoTask, message: str) -> None:
        _, changed = await self._write(
            task, decisions.move(TaskStatus.FAILED, api.first_line_error(message))
        )
        if changed:
            self.events.post(task, "Failed", message, warning=True)

    # ---- admit and start ---------------------------------------------------------

    async def _rack(self, namespace: str, name: str) -> api.NicoRack | None:
        store = self.racks.get((namespace, name))
        for rack in store or ():
            return api.NicoRack.model_validate_json(rack)
        # Not indexed (yet): the rack may have been created a moment ago.
        try:
            return api.NicoRack.model_validate(await self.kube.get(RACKS, name, namespace))
        except (NotFound, ValidationError):
            return None

    async def _resolve(self, task: NicoTask, rack: api.NicoRack) -> Any:
        ns = task.metadata.namespace or ""
        rules = list(self.rules.get(ns) or ())
        try:
            return resolve_rule(task.spec, rack, rules)
        except RuleNotFound:
            # The index may lag a rule created a moment ago: read them once.
            fresh = []
            for raw in await self.kube.list_objects(RULES, ns):
                try:
                    fresh.append(api.NicoOperationRule.model_validate(raw))
                except ValidationError:
                    continue
            return resolve_rule(task.spec, rack, fresh)

    async def _admit(self, task: NicoTask) -> None:
        ns = task.metadata.namespace or ""
        rack = await self._rack(ns, task.spec.rack_ref)
        if rack is None:
            await self._fail(task, f"NicoRack {task.spec.rack_ref} not found in namespace {ns}")
            return
        if rack.spec.site_id.lower() != task.spec.site_id.lower():
            await self._fail(
                task,
                f"rack {task.spec.rack_ref} belongs to site {rack.spec.site_id}, "
                f"not {task.spec.site_id}",
            )
            return
        try:
            resolved = await self._resolve(task, rack)
        except RuleNotFound as exc:
            await self._fail(task, str(exc))
            return
        key = (ns, task.spec.rack_ref)
        lock = self._rack_locks.setdefault(key, asyncio.Lock())
        async with lock:
            started = await self._admit_on_rack(task.metadata.uid or "", rack, resolved)
        if started is not None:
            message = f"workflow {started.metadata.uid} started (rule {resolved.rule_id})"
            self.events.post(started, "Started", message)

    async def _admit_on_rack(self, uid: str, rack: api.NicoRack, resolved: Any) -> NicoTask | None:
        """Under the rack's lock: start, queue or refuse. Returns the task when started."""
        task = self.live_tasks.get(uid)  # fresh again: the lock may have been contended
        if task is None or task.spec.cancel or task.status.run_id is not None:
            if task is not None and task.spec.cancel:
                self.queue.add(uid)
            return None
        if lifecycle.is_terminal(task.status.status):
            return None
        siblings = self.live_tasks.on_rack(task.metadata.namespace or "", task.spec.rack_ref)
        decision = lifecycle.admission(
            lifecycle.QueueEntry.of(task),
            [lifecycle.QueueEntry.of(t) for t in siblings],
            self.settings.queue_limit,
        )
        if decision is lifecycle.Admission.REJECT:
            await self._fail(task, lifecycle.conflict_message(task.spec.rack_ref))
            return None
        if decision is lifecycle.Admission.WAIT:
            if task.status.status != TaskStatus.WAITING:
                _, changed = await self._write(task, decisions.waiting_status(resolved.rule_id))
                if changed:
                    self.events.post(task, "Queued", lifecycle.QUEUED_MESSAGE)
            return None
        workflow_input = build_workflow_input(task, rack, resolved.rule_id, resolved.spec)
        try:
            run_id = await start_workflow(
                await self.temporal(), self.settings.task_queue, workflow_input
            )
        except TemporalUnavailable as exc:
            message = f"Waiting for Temporal: {api.first_line_error(str(exc))}"
            await self._write(task, decisions.temporal_waiting_status(message))
            raise Retry(f"Temporal unreachable while starting: {exc}", 5.0) from exc
        written, _ = await self._write(task, decisions.started_status(resolved.rule_id, run_id))
        return written

    # ---- cancel ------------------------------------------------------------------

    async def _cancel(self, task: NicoTask) -> None:
        """spec.cancel is true: terminate the workflow, then write Terminated once; or,
        for a graceful stop, ask the workflow to stop and say so (it ends by itself)."""
        uid = task.metadata.uid or ""
        by = decisions.requested_by(task)
        requested_at = (
            task.status.cancel_requested_at or self._cancel_seen.get(uid) or dt.datetime.now(dt.UTC)
        )
        graceful = task.spec.stop_mode() == StopMode.GRACEFUL
        stop = request_cancel if graceful else terminate
        client = await self.temporal()
        # Escalating a graceful stop: its cleanup may be newer than the CR's report
        # (progress writes are coalesced), so the workflow's own report is read first.
        report = None
        if not graceful and task.status.cancel_mode == StopMode.GRACEFUL:
            report = await current_report(client, uid)
        began = time.monotonic()
        try:
            result = await stop(client, uid, task.status.run_id, decisions.cancel_reason(task))
        except TemporalUnavailable as exc:
            if not any(c.type == lifecycle.CANCEL_PENDING for c in task.status.conditions):
                message = f"Temporal unreachable, retrying: {api.first_line_error(str(exc))}"
                await self._write(task, decisions.cancel_pending_status(by, requested_at, message))
            raise Retry(f"cancel waits for Temporal: {exc}", TEMPORAL_RETRY) from exc
        self.metrics.terminate_rpc.observe(time.monotonic() - began)
        if graceful and result is TerminateResult.TERMINATED:
            written, changed = await self._write(task, decisions.stopping_status(by, requested_at))
            if changed:
                self.events.post(
                    written,
                    "StoppingGracefully",
                    f"{decisions.cancel_reason(written)}; {lifecycle.STOPPING_MESSAGE}",
                )
            return
        if result in (TerminateResult.TERMINATED, TerminateResult.NEVER_STARTED):
            await self._write_cancelled(task, by, requested_at, report)
            return
        # It had closed before our terminate: report what Temporal recorded.
        try:
            observed = await observe(client, uid)
        except TemporalUnavailable as exc:
            raise Retry(f"reading the outcome waits for Temporal: {exc}", TEMPORAL_RETRY) from exc
        if observed is None or observed.status == TaskStatus.TERMINATED:
            await self._write_cancelled(task, by, requested_at)
            return
        written, changed = await self._write(
            task, decisions.outcome_status(observed, cancel_ignored=True)
        )
        if changed:
            self._post_outcome(written)
            self._post_cancel_ignored(written)

    async def _write_cancelled(
        self,
        task: NicoTask,
        by: str | None,
        requested_at: dt.datetime,
        report: api.TaskReportV1 | None = None,
    ) -> None:
        decide = decisions.cancelled_status(by, requested_at, report)
        written, changed = await self._write(task, decide)
        if not changed:
            return
        requested = written.status.cancel_requested_at
        if requested is not None:
            self.metrics.cancel_latency.observe(
                (dt.datetime.now(dt.UTC) - requested).total_seconds()
            )
        self.events.post(written, "Cancelled", decisions.cancelled_event_message(written))

    async def _cancel_ignored(self, task: NicoTask) -> None:
        written, changed = await self._write(task, decisions.cancel_ignored_status)
        if changed:
            self._post_cancel_ignored(written)

    # ---- finish (the follower saw the workflow close) ----------------------------

    async def _finish(self, task: NicoTask) -> None:
        uid = task.metadata.uid or ""
        try:
            observed = await observe(await self.temporal(), uid)
        except TemporalUnavailable as exc:
            raise Retry(f"reading the outcome waits for Temporal: {exc}", TEMPORAL_RETRY) from exc
        if observed is not None and observed.running:
            if lifecycle.report_settled(task.status.report):
                # Its final report is out and the close follows within moments; check
                # again, less and less often (a workflow that never closes is left to
                # the follower then).
                checks = self._settled_checks.get(uid, 0)
                self._settled_checks[uid] = checks + 1
                self.queue.add_after(uid, min(SETTLED_RECHECK_S * 2**checks, SETTLED_RECHECK_MAX_S))
            return
        if observed is None:
            if task.status.run_id is None:
                return  # never started (the start will be retried)
            await self._fail(task, f"workflow {uid} no longer exists in Temporal")
            return
        written, changed = await self._write(task, decisions.outcome_status(observed))
        if changed:
            self._post_outcome(written)
            if written.status.status == TaskStatus.SUCCEEDED and written.spec.cancel:
                # A graceful stop that came after the last stage: nothing was stopped.
                self._post_cancel_ignored(written)

    def _post_cancel_ignored(self, task: NicoTask) -> None:
        message = decisions.cancel_ignored_message(task, task.status.status)
        self.events.post(task, "CancelIgnored", message, warning=True)

    def _post_outcome(self, task: NicoTask) -> None:
        status = task.status.status
        self.events.post(
            task,
            status.value,
            task.status.message or status.value,
            warning=status != TaskStatus.SUCCEEDED,
        )

    # ---- expire -------------------------------------------------------------------

    async def _expire(self, task: NicoTask) -> None:
        def only_while_waiting(fresh: NicoTask) -> api.NicoTaskStatus | None:
            if fresh.status.status != TaskStatus.WAITING or fresh.spec.cancel:
                return None
            return decisions.move(TaskStatus.TERMINATED, lifecycle.EXPIRED_MESSAGE)(fresh)

        written, changed = await self._write(task, only_while_waiting)
        if changed:
            self.events.post(written, "Expired", lifecycle.EXPIRED_MESSAGE)

    async def _deadline_before_start(self, task: NicoTask) -> None:
        deadline = task.spec.deadline
        not_after = api.rfc3339(deadline.not_after) if deadline and deadline.not_after else "-"
        message = lifecycle.DEADLINE_BEFORE_START_MESSAGE.format(not_after)
        written, changed = await self._write(task, decisions.deadline_passed_status(message))
        if changed:
            self.events.post(written, "DeadlineExceeded", message, warning=True)

    def expire_due(self) -> None:
        """Queue every Waiting task whose time in the queue, or whose deadline, ran out
        (one timer for all)."""
        timeout = dt.timedelta(seconds=self.settings.queue_timeout_seconds)
        now = api.utcnow()
        for task in self.live_tasks.live():
            expired = lifecycle.queue_expired(task.status, timeout, now)
            if expired or lifecycle.start_deadline_passed(task, now):
                self.queue.add(task.metadata.uid or "")

    # ---- delete ---------------------------------------------------------------------

    async def _deleted_task(self, task: NicoTask) -> None:
        """A live task left the watch: if it is really gone, stop its workflow, free its rack."""
        ns = task.metadata.namespace or ""
        uid = task.metadata.uid or ""
        ours = self.live_tasks.get(uid)
        if (
            ours is not None
            and lifecycle.is_terminal(ours.status.status)
            and resource_version(ours) >= resource_version(task)
        ):
            # Our own terminal write took it out of the watch, and its answer came back
            # after the watch's event (a burst of cancels): nothing was deleted, no read.
            self.live_tasks.forget(uid)
            self._promote(ns, task.spec.rack_ref)
            return
        try:
            current = await self.kube.get_task(ns, task.metadata.name)
        except NotFound:
            current = None
        if current is not None and current.metadata.uid == task.metadata.uid:
            if lifecycle.is_terminal(current.status.status):
                # Finished by another writer (a replica that was active a moment
                # ago): its rack is free here too, or the tasks queued behind it
                # would wait for the queue timeout.
                self._promote(ns, task.spec.rack_ref)
            return  # still there: it finished, or moved to another shard
        await self._stop_workflow(task, "NicoTask deleted")
        self._promote(ns, task.spec.rack_ref)

    async def _stop_workflow(self, task: NicoTask, reason: str) -> None:
        try:
            await terminate(await self.temporal(), task.metadata.uid or "", None, reason)
        except TemporalUnavailable as exc:
            raise Retry(f"stopping a workflow waits for Temporal: {exc}", 5.0) from exc
