"""Connecting to Temporal and starting a task's workflow."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from temporalio.client import Client, TLSConfig, WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.contrib.pydantic import pydantic_data_converter

from nicotask.settings import Settings
from nicotask.temporal.models import WORKFLOW_NAME, WorkflowInput, WorkflowOutcome

# Temporal's own execution timeout is a backstop behind the workflow's in-code
# deadline (which fails the running stage cleanly and still returns an outcome).
EXECUTION_TIMEOUT_MARGIN = timedelta(minutes=5)
MEMO_NAMESPACE = "namespace"
MEMO_NAME = "name"


def tls_config(settings: Settings) -> TLSConfig | bool:
    if not settings.temporal_tls:
        return False

    def read(path: str | None) -> bytes | None:
        return Path(path).read_bytes() if path else None

    return TLSConfig(
        server_root_ca_cert=read(settings.temporal_tls_ca_file),
        client_cert=read(settings.temporal_tls_cert_file),
        client_private_key=read(settings.temporal_tls_key_file),
    )


async def connect(settings: Settings, **kwargs: Any) -> Client:
    """A Temporal client with the pydantic data converter (TLS and API key when configured)."""
    api_key = settings.temporal_api_key
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        data_converter=pydantic_data_converter,
        tls=tls_config(settings),
        api_key=api_key.get_secret_value() if api_key else None,
        **kwargs,
    )


async def start_task_workflow(
    client: Client, inp: WorkflowInput, *, task_queue: str
) -> WorkflowHandle[Any, WorkflowOutcome]:
    """Start NicoTaskWorkflow for a task: id = task uid; a second start returns the same run."""
    return await client.start_workflow(
        WORKFLOW_NAME,
        inp,
        id=inp.task.uid,
        task_queue=task_queue,
        result_type=WorkflowOutcome,
        execution_timeout=timedelta(seconds=inp.workflow_timeout_seconds)
        + EXECUTION_TIMEOUT_MARGIN,
        id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        # Lets the operator find the task of an execution it no longer indexes.
        memo={MEMO_NAMESPACE: inp.task.namespace, MEMO_NAME: inp.task.name},
    )
