"""The REST contract of contract/openapi.yaml: Task, TaskReportV1, NICoAPIError."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from .common import ErrorText, ReportStatus, TaskStatus, Timestamp, Uuid, list_map


class ReportModel(BaseModel):
    """Report models accept unknown-free camelCase and keep insertion order."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    def wire(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class TaskReportV1Step(ReportModel):
    """Execution state of one rule step; pairs 1:1 with the rule's steps of its stage."""

    component_type: str = Field(
        max_length=64, description="Component class of the step: Compute, NVSwitch, PowerShelf."
    )
    status: ReportStatus
    total_components: int | None = Field(
        default=None, ge=0, description="Components of componentType the step targets."
    )
    completed_components: int | None = Field(default=None, ge=0, description="Reserved.")
    failed_components: int | None = Field(default=None, ge=0, description="Reserved.")
    started_at: Timestamp | None = Field(default=None, description="Set when leaving pending.")
    finished_at: Timestamp | None = Field(default=None, description="Set when terminal.")
    error: ErrorText | None = Field(
        default=None, description="Failure summary, at most 512 bytes of UTF-8."
    )


class TaskReportV1Stage(ReportModel):
    """Execution state of one rule stage."""

    number: int = Field(ge=1, description="1-based rule stage number.")
    status: ReportStatus
    steps: list[TaskReportV1Step] = Field(max_length=64)
    started_at: Timestamp | None = Field(default=None, description="Set when leaving pending.")
    finished_at: Timestamp | None = Field(default=None, description="Set when terminal.")
    error: ErrorText | None = Field(
        default=None, description="Failure summary, at most 512 bytes of UTF-8."
    )


class TaskReportV1(ReportModel):
    """Structured execution report (version 1), mirroring the rule's stages and steps."""

    version: Literal["1"] = Field(default="1", description="Always 1.")
    stages: list[TaskReportV1Stage] = Field(
        default_factory=list, max_length=100, json_schema_extra=list_map("number")
    )
    error: ErrorText | None = Field(
        default=None, description="The first failure of the task, at most 512 bytes of UTF-8."
    )

    @model_validator(mode="after")
    def _stages_ascending(self) -> TaskReportV1:
        numbers = [stage.number for stage in self.stages]
        if numbers != sorted(set(numbers)):
            raise ValueError(f"report stage numbers must be unique and ascending, got {numbers}")
        return self


class Task(ReportModel):
    """The REST Task representation."""

    id: Uuid
    status: TaskStatus
    description: str | None = None
    message: str | None = None
    rule_id: Uuid | None = None
    started: Timestamp | None = None
    finished: Timestamp | None = None
    created: Timestamp | None = None
    updated: Timestamp | None = None
    report: TaskReportV1 | None = None

    def wire(self) -> dict[str, Any]:
        body = super().wire()
        body["ruleId"] = self.rule_id  # nullable, always present
        return body


class NICoAPIError(ReportModel):
    source: Literal["nico"] = "nico"
    message: str
    data: dict[str, Any] | None = None

    def wire(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)
