"""NicoTask: a rack task, its model and its CRD metadata."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field

from .common import (
    AGE_COLUMN,
    DNS_LABEL_PATTERN,
    FINISHED_STATUS_VALUES,
    FINISHED_STATUSES,
    GROUP,
    Condition,
    CustomResource,
    Model,
    Operation,
    Resource,
    TaskStatus,
    Timestamp,
    Uuid,
    cel,
    column,
    immutable,
    list_map,
)
from .rest import TaskReportV1

TASKS = "nicotasks"
# Who asked for a cancel (an admission policy keeps it honest: admission.py).
CANCEL_REQUESTED_BY = f"{GROUP}/cancel-requested-by"

TERMINAL_STATUS_CEL = "[" + ", ".join(f"'{s}'" for s in FINISHED_STATUS_VALUES) + "]"
# Field selectors on the selectable fields (TASK_RESOURCE.selectable_fields).
CANCEL_REQUESTED_SELECTOR = "spec.cancel=true"
# The tasks that have not finished.
LIVE_FIELD_SELECTOR = ",".join(f"status.status!={s.value}" for s in sorted(FINISHED_STATUSES))


def status_selector(status: TaskStatus) -> str:
    """The field selector of the tasks in `status`."""
    return f"status.status={status.value}"


class NicoTaskSpec(Model):
    """What the user asks for. Immutable after creation, except `cancel` (one-way)."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!has(oldSelf.cancel) || !oldSelf.cancel || (has(self.cancel) && self.cancel)",
                    "spec.cancel cannot be set back to false",
                    field_path=".cancel",
                    reason="FieldValueForbidden",
                ),
                cel(
                    "has(self.ruleId) == has(oldSelf.ruleId)"
                    " && (!has(self.ruleId) || self.ruleId == oldSelf.ruleId)",
                    "spec.ruleId is immutable",
                    field_path=".ruleId",
                ),
            ]
        }
    )

    site_id: Uuid = Field(
        description="UUID of the Site the task belongs to (tasks are site-scoped). Immutable.",
        json_schema_extra=immutable("spec.siteId"),
    )
    rack_ref: str = Field(
        min_length=1,
        max_length=63,
        pattern=DNS_LABEL_PATTERN,
        description="Name of the NicoRack (same namespace) the task operates on. Immutable.",
        json_schema_extra=immutable("spec.rackRef"),
    )
    operation: Operation = Field(
        description="Operation to run on the rack. Immutable.",
        json_schema_extra=immutable("spec.operation"),
    )
    rule_id: Uuid | None = Field(
        default=None,
        description="Pin a NicoOperationRule by its ruleId; resolved when unset. Immutable.",
    )
    description: str = Field(
        default="",
        max_length=1024,
        description="Human-readable text. Immutable.",
        json_schema_extra=immutable("spec.description"),
    )
    cancel: bool = Field(
        default=False,
        description="Set true to cancel the task. One-way: it cannot be set back to false.",
    )
    ttl_seconds_after_finished: int | None = Field(
        default=None,
        ge=0,
        le=10 * 365 * 24 * 3600,
        description=(
            "Delete the task this many seconds after it finished (like a Job's). "
            "Unset: the operator's default (by default, keep it)."
        ),
    )


class NicoTaskStatus(Model):
    """What the operator and worker observed. The REST Task fields plus bookkeeping."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    f"!has(oldSelf.status) || !(oldSelf.status in {TERMINAL_STATUS_CEL})"
                    " || (has(self.status) && self.status == oldSelf.status)",
                    "status.status is terminal (Succeeded, Failed or Terminated) and is final",
                    field_path=".status",
                ),
                cel(
                    "!has(oldSelf.reportSequence)"
                    " || (has(self.reportSequence)"
                    " && self.reportSequence >= oldSelf.reportSequence)",
                    "status.reportSequence cannot decrease: a newer report is already stored",
                    field_path=".reportSequence",
                ),
            ]
        }
    )

    id: Uuid | None = Field(default=None, description="Task id: the object's metadata.uid.")
    status: TaskStatus = Field(
        default=TaskStatus.PENDING,
        description="Current state of the task. Succeeded, Failed and Terminated are final.",
    )
    message: str | None = Field(
        default=None, max_length=4096, description="Status or error message."
    )
    rule_id: Uuid | None = Field(
        default=None, description="The NicoOperationRule resolved for the task (its ruleId)."
    )
    created: Timestamp | None = Field(default=None, description="When the task was created.")
    started: Timestamp | None = Field(default=None, description="When execution started.")
    finished: Timestamp | None = Field(default=None, description="When the task finished.")
    updated: Timestamp | None = Field(default=None, description="When status last changed.")
    report: TaskReportV1 | None = Field(
        default=None, description="Structured execution report (REST TaskReportV1)."
    )
    report_sequence: int | None = Field(
        default=None,
        ge=0,
        description="Version of `report` in its workflow; never decreases, so a late"
        " progress write cannot put back an older report.",
    )
    workflow_id: str | None = Field(default=None, description="Temporal workflow id (= id).")
    run_id: str | None = Field(default=None, description="First execution run id of the workflow.")
    waiting_since: Timestamp | None = Field(
        default=None, description="When the task joined its rack's queue."
    )
    cancel_requested_at: Timestamp | None = Field(
        default=None, description="When the operator first saw spec.cancel."
    )
    cancel_requested_by: str | None = Field(default=None, description="Who asked to cancel.")
    observed_generation: int | None = Field(
        default=None, ge=0, description="metadata.generation last acted on."
    )
    conditions: list[Condition] = Field(
        default_factory=list, max_length=32, json_schema_extra=list_map("type")
    )
    kopf: dict[str, Any] | None = Field(
        default=None, description="Bookkeeping of nicotask <= 0.1's operator (no longer written)."
    )


class NicoTask(Resource):
    """A NICo rack task: run `operation` on the rack `rackRef`, as a Temporal workflow."""

    kind: Literal["NicoTask"] = "NicoTask"
    spec: NicoTaskSpec
    status: NicoTaskStatus = Field(default_factory=NicoTaskStatus)


TASK_RESOURCE = CustomResource(
    model=NicoTask,
    plural=TASKS,
    short_names=("nt", "ntask"),
    namespaced=True,
    status_subresource=True,
    columns=(
        column("Status", ".status.status"),
        column("Operation", ".spec.operation"),
        column("Rack", ".spec.rackRef"),
        column("Site", ".spec.siteId"),
        column("Message", ".status.message"),
        AGE_COLUMN,
        column("Rule", ".status.ruleId", priority=1),
        column("Cancel", ".spec.cancel", "boolean", priority=1),
        column("Finished", ".status.finished", "date", priority=1),
    ),
    selectable_fields=(".spec.rackRef", ".spec.siteId", ".spec.cancel", ".status.status"),
)
