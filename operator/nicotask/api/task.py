"""NicoTask: a rack task, its model and its CRD metadata."""

from __future__ import annotations

import enum
import re
from typing import Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

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

# One line of printable text: no control characters (C0, DEL, C1), and no U+FFFD,
# which is what the API server's JSON decoder puts in place of invalid UTF-8.
CANCEL_REASON_MAX = 512
_UNPRINTABLE = re.compile("[\\x00-\\x1f\\x7f-\\x9f\\ufffd]")
UNPRINTABLE_CEL = "[\\\\x00-\\\\x1f\\\\x7f-\\\\x9f\\\\x{FFFD}]"

TERMINAL_STATUS_CEL = "[" + ", ".join(f"'{s}'" for s in FINISHED_STATUS_VALUES) + "]"
# Field selectors on the selectable fields (TASK_RESOURCE.selectable_fields).
CANCEL_REQUESTED_SELECTOR = "spec.cancel=true"
# The tasks that have not finished.
LIVE_FIELD_SELECTOR = ",".join(f"status.status!={s.value}" for s in sorted(FINISHED_STATUSES))


def status_selector(status: TaskStatus) -> str:
    """The field selector of the tasks in `status`."""
    return f"status.status={status.value}"


class StopMode(enum.StrEnum):
    """How a task is stopped early (by a cancel or by its deadline)."""

    # The workflow is terminated at once: no further BMC request, no cleanup.
    TERMINATE = "Terminate"
    # The running stage finishes, later stages are skipped, the rule's cleanup runs.
    GRACEFUL = "Graceful"


def check_reason(value: str | None) -> str | None:
    """A cancel reason is one line of printable text (the CRD's rule, in Python)."""
    if value is not None and _UNPRINTABLE.search(value):
        raise ValueError(
            "spec.cancelReason must be one line of printable text"
            " (no control characters or invalid UTF-8)"
        )
    return value


class TaskDeadline(Model):
    """When a task must be done by; like a Job's activeDeadlineSeconds."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "has(self.activeSeconds) || has(self.notAfter)",
                    "spec.deadline needs activeSeconds, notAfter or both",
                    reason="FieldValueRequired",
                ),
            ]
        }
    )

    active_seconds: int | None = Field(
        default=None,
        ge=1,
        le=7 * 86400,
        description="Seconds the task may run, counted from its start: time queued for"
        " the rack does not count.",
    )
    not_after: Timestamp | None = Field(
        default=None,
        description="A time by which the task must be done: not started by then, it never"
        " starts (Failed); still running then, it is stopped.",
    )
    stop: StopMode = Field(
        default=StopMode.GRACEFUL,
        description="How the task is stopped when the deadline runs out: Graceful (the"
        " running stage finishes, the rule's cleanup runs) or Terminate. Either way it"
        " ends Failed.",
    )

    @model_validator(mode="after")
    def _one_of(self) -> TaskDeadline:
        if self.active_seconds is None and self.not_after is None:
            raise ValueError("spec.deadline needs activeSeconds, notAfter or both")
        return self


class NicoTaskSpec(Model):
    """What the user asks for. Immutable after creation, except the cancel fields
    (`cancel` and `cancelMode` move one way; `cancelReason` is fixed once cancelled)."""

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
                    "!(has(oldSelf.cancel) && oldSelf.cancel)"
                    " || (has(oldSelf.cancelMode) && oldSelf.cancelMode == 'Graceful')"
                    " || !has(self.cancelMode) || self.cancelMode == 'Terminate'",
                    "spec.cancelMode cannot become Graceful once the task is cancelled with"
                    " Terminate: a graceful stop may be escalated to Terminate, never the"
                    " reverse",
                    field_path=".cancelMode",
                    reason="FieldValueForbidden",
                ),
                cel(
                    "!(has(oldSelf.cancel) && oldSelf.cancel) || !has(oldSelf.cancelReason)"
                    " || (has(self.cancelReason) && self.cancelReason == oldSelf.cancelReason)",
                    "spec.cancelReason cannot change once the task is cancelled",
                    field_path=".cancelReason",
                    reason="FieldValueForbidden",
                ),
                cel(
                    "has(self.deadline) == has(oldSelf.deadline)"
                    " && (!has(self.deadline) || self.deadline == oldSelf.deadline)",
                    "spec.deadline is immutable",
                    field_path=".deadline",
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
    cancel_mode: StopMode | None = Field(
        default=None,
        description="How `cancel` stops the task: Terminate (unset: the default, and what"
        " the REST cancel does) ends the workflow at once; Graceful lets the running stage"
        " finish, skips the rest and runs the rule's cleanup. Once cancelled, Graceful may"
        " be escalated to Terminate, never the reverse.",
    )
    cancel_reason: str | None = Field(
        default=None,
        max_length=CANCEL_REASON_MAX,
        description="Why the task is cancelled: one line of text, shown in status.message,"
        " the Event and Temporal's cancel/terminate reason. Fixed once cancelled.",
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    f"!self.matches('{UNPRINTABLE_CEL}')",
                    "spec.cancelReason must be one line of printable text"
                    " (no control characters or invalid UTF-8)",
                )
            ]
        },
    )
    deadline: TaskDeadline | None = Field(
        default=None, description="Stop the task when it runs too long. Immutable."
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

    _reason_is_printable = field_validator("cancel_reason")(check_reason)

    def stop_mode(self) -> StopMode:
        """The mode a cancel asks for (Terminate unless Graceful is set)."""
        return self.cancel_mode or StopMode.TERMINATE


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
    cancel_reason: str | None = Field(
        default=None, max_length=CANCEL_REASON_MAX, description="Why, as the canceller said."
    )
    cancel_mode: StopMode | None = Field(
        default=None,
        description="The stop the operator delivered to Temporal: Graceful (the workflow"
        " is finishing its stage and cleanup) or Terminate.",
    )
    observed_generation: int | None = Field(
        default=None, ge=0, description="metadata.generation last acted on."
    )
    conditions: list[Condition] = Field(
        default_factory=list, max_length=32, json_schema_extra=list_map("type")
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
