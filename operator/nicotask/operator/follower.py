"""One follower for every live task: Temporal visibility instead of a watcher per task.

About once a second it asks Temporal which of our executions closed since a
watermark, and queues a `closed` reconcile for each live task among them.
Every `reconcile_interval_seconds` a slower full pass compares all live
tasks with the executions Temporal says are running (catching anything the
watermark missed, and executions gone from Temporal: a task missing from two
passes in a row), and terminates the executions of tasks that were deleted
while nobody watched, or that run for a task already finished. The same loop
expires queued tasks and tidies the live tasks.

It acts only while this replica is active (operator/leadership.py): a paused
standby's follower acting on its frozen copies started and finished tasks
beside the active replica. Each time the replica becomes active, and in
every full pass, the live tasks are checked against a LIST (operator/resync.py).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable

from temporalio.client import Client

from nicotask import lifecycle
from nicotask.api import NicoTask, TaskStatus
from nicotask.kube import NotFound
from nicotask.logs import task_context
from nicotask.operator.controller import Controller
from nicotask.operator.decisions import CLOSED
from nicotask.operator.resync import resync
from nicotask.temporal.control import (
    Execution,
    TemporalUnavailable,
    closed_since,
    running,
    terminate,
)

log = logging.getLogger(__name__)

# Visibility records land a little after the close; re-read this far back.
OVERLAP = dt.timedelta(seconds=10)
STARTUP_LOOKBACK = dt.timedelta(minutes=1)


def resume_watermark(watermark: dt.datetime, now: dt.datetime) -> dt.datetime:
    """Where the closed pass resumes after a standby: never further back than at start-up."""
    return max(watermark, now - STARTUP_LOOKBACK)


def _started(task: NicoTask) -> bool:
    """Its execution exists: the operator recorded the run, or the workflow wrote
    progress (Running, a report) while the run id's write was lost."""
    status = task.status
    return status.run_id is not None or status.status == TaskStatus.RUNNING or bool(status.report)


class Follower:
    def __init__(
        self,
        controller: Controller,
        temporal: Callable[[], Awaitable[Client]],
        *,
        interval: float = 1.0,
        full_interval: float = 30.0,
    ) -> None:
        self.controller = controller
        self.temporal = temporal
        self.interval = interval
        self.full_interval = full_interval
        self.watermark = dt.datetime.now(dt.UTC) - STARTUP_LOOKBACK
        self._seen: dict[tuple[str, str], dt.datetime] = {}
        self._orphans: set[str] = set()
        self._missing: set[str] = set()
        self._next_full = 0.0
        self._term = 0  # the leadership term the live tasks were last checked in
        self.reachable = True

    @property
    def task_queue(self) -> str:
        return self.controller.settings.task_queue

    async def housekeeping(self) -> None:
        """Expire queued tasks and tidy the live tasks, every interval, whatever Temporal does."""
        while True:
            self.controller.live_tasks.prune()
            if self.controller.leadership.active():
                self.controller.expire_due()
            await asyncio.sleep(self.interval)

    async def run(self) -> None:
        housekeeping = asyncio.create_task(self.housekeeping())
        try:
            await self._follow()
        finally:
            housekeeping.cancel()

    async def _follow(self) -> None:
        backoff = self.interval
        leadership = self.controller.leadership
        while True:
            await leadership.wait_active()
            try:
                if leadership.term != self._term:
                    # Active again (or for the first time): the live tasks against a LIST and a
                    # full pass at once; closes are re-read back to at most the start-up
                    # look-back (after a long standby, the full pass finds the rest).
                    self._term = leadership.term
                    self._next_full = 0.0
                    self.watermark = resume_watermark(self.watermark, dt.datetime.now(dt.UTC))
                client = await self.temporal()
                if time.monotonic() >= self._next_full:
                    await resync(self.controller)
                    await self.full_pass(client)
                    self._next_full = time.monotonic() + self.full_interval
                await self.closed_pass(client)
                self.reachable = True
                backoff = self.interval
            except TemporalUnavailable as exc:
                if self.reachable:
                    log.warning("following workflows: Temporal unreachable: %s", exc)
                self.reachable = False
                backoff = min(backoff * 2, 30.0)
            except Exception:
                log.exception("following workflows failed; retrying")
                backoff = min(backoff * 2, 30.0)
            await asyncio.sleep(backoff)

    async def closed_pass(self, client: Client) -> None:
        """Queue the live tasks whose executions closed since the watermark."""
        closed = await closed_since(client, self.task_queue, self.watermark - OVERLAP)
        live = self.controller.live_tasks
        for ex in closed:
            key = (ex.workflow_id, ex.run_id)
            if key in self._seen or ex.close_time is None:
                continue
            self._seen[key] = ex.close_time
            self.watermark = max(self.watermark, ex.close_time)
            task = live.get(ex.workflow_id)
            if task is not None and not lifecycle.is_terminal(task.status.status):
                self.controller.queue.add(ex.workflow_id, CLOSED)
        horizon = self.watermark - 2 * OVERLAP
        for key, closed_at in list(self._seen.items()):
            if closed_at < horizon:
                del self._seen[key]

    async def full_pass(self, client: Client) -> None:
        """Every live task against what Temporal runs; executions whose task is gone."""
        executions = await running(client, self.task_queue)
        running_ids = {ex.workflow_id for ex in executions}
        live = self.controller.live_tasks
        # A started task missing from the list, twice in a row: its execution may have
        # closed unseen. Once is not enough: visibility trails the starts, by seconds
        # in a burst, and each false alarm would cost a DescribeWorkflowExecution.
        missing = {
            task.metadata.uid or ""
            for task in live.live()
            if _started(task) and task.metadata.uid not in running_ids
        }
        for uid in missing & self._missing:
            self.controller.queue.add(uid, CLOSED)
        self._missing = missing
        # An execution no live task claims, twice in a row: its task may be gone.
        candidates = {ex.workflow_id for ex in executions if ex.workflow_id not in live}
        for ex in executions:
            if ex.workflow_id in candidates and ex.workflow_id in self._orphans:
                await self._stop_if_orphaned(client, ex)
        self._orphans = candidates

    async def _stop_if_orphaned(self, client: Client, ex: Execution) -> None:
        ref = await ex.task_ref()
        if ref is None:
            return
        namespace, name = ref
        served = self.controller.settings.namespaces
        if served and namespace not in served:
            return
        try:
            task = await self.controller.kube.get_task(namespace, name)
        except NotFound:
            task = None
        reason = "NicoTask deleted"
        if task is not None and task.metadata.uid == ex.workflow_id:
            if not lifecycle.is_terminal(task.status.status):
                return  # the task exists and runs (another shard's, or the index lags)
            # Finished, yet its workflow runs (a stale replica started it after the task
            # was cancelled while Waiting): nothing may run for a finished task.
            reason = f"NicoTask already {task.status.status}"
        with task_context(namespace, name, ex.workflow_id):  # the workflow id is the uid
            log.info("terminating workflow %s of NicoTask %s/%s: %s", ex.workflow_id, *ref, reason)
            try:
                await terminate(client, ex.workflow_id, None, reason)
            except TemporalUnavailable:
                raise
            except Exception:
                log.exception("could not terminate orphaned workflow %s", ex.workflow_id)
