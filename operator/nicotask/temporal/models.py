"""The arguments and results of the workflow and its activities (one pydantic model each).

They travel through Temporal with temporalio.contrib.pydantic's data
converter. No credentials enter Temporal history. The input is a hint, never
authority: the activities act on the NicoTask (namespace, name, uid = the
workflow id) and derive each component's endpoint, system id, Secret and CA
from the task's NicoRack as stored in the cluster, by component id.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from nicotask.api import (
    ComponentType,
    NicoOperationRuleSpec,
    NicoRack,
    NicoTask,
    Operation,
    PowerState,
    SecretRef,
    StepAction,
    TaskDeadline,
    TaskReportV1,
    TaskStatus,
)

WORKFLOW_NAME = "NicoTaskWorkflow"
PUBLISH_PROGRESS = "publish_progress"
RUN_STEP_ACTION = "run_step_action"


class TemporalModel(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class TaskRef(TemporalModel):
    """Which NicoTask a workflow runs: uid guards against a recreated namesake."""

    namespace: str
    name: str
    uid: str


class ComponentTarget(TemporalModel):
    """One component to act on and how to reach its BMC (credentials by Secret name)."""

    id: str
    type: ComponentType
    endpoint: str
    system_id: str | None = None
    credentials_secret: SecretRef
    insecure_skip_verify: bool = False
    ca_secret_ref: str | None = None


class WorkflowInput(TemporalModel):
    task: TaskRef
    operation: Operation
    rule_id: str | None
    rule: NicoOperationRuleSpec
    components: list[ComponentTarget] = Field(default_factory=list)
    workflow_timeout_seconds: float = 3600.0
    # The task's own deadline (spec.deadline): its timer runs in the workflow.
    deadline: TaskDeadline | None = None


class WorkflowOutcome(TemporalModel):
    """What the workflow returns; the operator writes the terminal status from it."""

    status: TaskStatus
    message: str
    report: TaskReportV1
    started: dt.datetime | None = None
    finished: dt.datetime | None = None
    # The final report's version (status.reportSequence): a terminal write that
    # carries it can never be refused as older than the last progress write.
    report_sequence: int | None = None


class ProgressUpdate(TemporalModel):
    """A snapshot of the live report to write into the CR (status stays Running).

    `sequence` is the workflow's report version: the CR's status.reportSequence
    refuses to go down, so a late write never replaces a newer report.
    """

    task: TaskRef
    report: TaskReportV1
    started: dt.datetime | None = None
    sequence: int = 0
    # status.message while it runs (None: "Running"); says so while it stops gracefully.
    message: str | None = None


class StepActivityInput(TemporalModel):
    """One step's action on one component."""

    task: TaskRef
    component: ComponentTarget
    action: StepAction
    heartbeat_seconds: float = 1.0


class StepResult(TemporalModel):
    component_id: str
    power_state: PowerState | None = None
    # This attempt sent a state-changing request, or an earlier attempt may have:
    # the component counts as acted on (a cleanup's ActedOn targets).
    reset_sent: bool = False


@dataclass(frozen=True)
class StopRequest:
    """Why the workflow's rule stops before its end, and how (its own state, never sent).

    Here and not in workflows.py: the sandbox executes workflows.py again for every
    new workflow run, and building a dataclass there (its methods made with exec) was
    about a twentieth of the worker's CPU per start; this module is passed through.
    """

    why: str  # "" for a cancel request, "deadline ran out (...)" for the deadline
    graceful: bool
    by_deadline: bool


def build_workflow_input(
    task: NicoTask, rack: NicoRack, rule_id: str | None, rule: NicoOperationRuleSpec
) -> WorkflowInput:
    """The workflow's argument for a task on a rack with its resolved rule."""
    namespace = task.metadata.namespace or rack.metadata.namespace or "default"
    components = [
        ComponentTarget(
            id=c.id,
            type=c.type,
            endpoint=c.redfish.endpoint.rstrip("/"),
            system_id=c.redfish.system_id,
            credentials_secret=c.redfish.credentials or rack.spec.credentials,
            insecure_skip_verify=rack.spec.tls.insecure_skip_verify,
            ca_secret_ref=rack.spec.tls.ca_secret_ref,
        )
        for c in rack.spec.components
    ]
    return WorkflowInput(
        task=TaskRef(namespace=namespace, name=task.metadata.name, uid=task.metadata.uid or ""),
        operation=task.spec.operation,
        rule_id=rule_id if rule_id is not None else rule.rule_id,
        rule=rule,
        components=components,
        workflow_timeout_seconds=rule.workflow_timeout_seconds,
        deadline=task.spec.deadline,
    )
