"""Is this activity still wanted? Asked before every state-changing BMC request.

Heartbeats are throttled (tens of seconds), so an activity learns late that
its workflow was terminated. A Reset must never go out after that, so each
one is preceded by a DescribeWorkflowExecution of the activity's own run:
the workflow must be RUNNING, and this activity attempt must still be
pending there without a cancel request (a fail-fast sibling's cancel). Any
doubt (Temporal unreachable) means "do not send".
"""

from __future__ import annotations

from datetime import timedelta
from typing import Protocol

from temporalio import activity
from temporalio.api.enums.v1 import PendingActivityState
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

# A short bound: the BMC request waits on it, and a slow answer means "don't send".
_RPC_TIMEOUT = timedelta(seconds=10)


class RunGuard(Protocol):
    async def __call__(self, info: activity.Info) -> str | None:
        """None when the activity may act; else why it may not."""
        ...


class TemporalRunGuard:
    """The run guard from Temporal's own record of the run (one RPC per check)."""

    def __init__(self, client: Client) -> None:
        self.client = client

    async def __call__(self, info: activity.Info) -> str | None:
        handle = self.client.get_workflow_handle(
            info.workflow_id or "", run_id=info.workflow_run_id
        )
        try:
            desc = await handle.describe(rpc_timeout=_RPC_TIMEOUT)
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                return "its workflow no longer exists"
            return f"could not confirm its workflow is running ({exc.message})"
        if desc.status != WorkflowExecutionStatus.RUNNING:
            name = desc.status.name if desc.status else "closed"
            return f"its workflow is {name.lower()}"
        for pending in desc.raw_description.pending_activities:
            if pending.activity_id != info.activity_id:
                continue
            if pending.state == PendingActivityState.PENDING_ACTIVITY_STATE_CANCEL_REQUESTED:
                return "the workflow cancelled it"
            if pending.attempt != info.attempt:
                return f"attempt {info.attempt} was superseded by attempt {pending.attempt}"
            return None
        return "the workflow no longer waits for it"
