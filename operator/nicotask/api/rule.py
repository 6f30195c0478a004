"""NicoOperationRule: how an operation runs (stages and steps), and its CRD metadata."""

from __future__ import annotations

import enum
from typing import Literal

from pydantic import ConfigDict, Field, model_validator

from .common import (
    AGE_COLUMN,
    ActionType,
    ComponentType,
    ComponentTypeField,
    CustomResource,
    Model,
    Operation,
    PowerAction,
    PowerState,
    Resource,
    Uuid,
    canonical_component_type,
    cel,
    column,
    immutable,
)
from .rest import TaskReportV1

RULES = "nicooperationrules"
# Cleanup stage N appears in a task's report as stage CLEANUP_STAGE_OFFSET + N, after
# every rule stage (those are numbered 1 to 100).
CLEANUP_STAGE_OFFSET = 100
MAX_CLEANUP_STAGE = 16


class RetryPolicy(Model):
    max_attempts: int = Field(default=3, ge=1, le=100)
    initial_interval_seconds: float = Field(default=1.0, gt=0, le=3600)
    backoff_coefficient: float = Field(default=2.0, ge=1, le=100)
    max_interval_seconds: float = Field(default=60.0, gt=0, le=86400)


class StepAction(Model):
    """What a step does to each component. Fields apply to particular action types."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "self.type != 'PowerControl' || has(self.power)",
                    "action.power is required when action.type is PowerControl",
                    field_path=".power",
                    reason="FieldValueRequired",
                ),
                cel(
                    "self.type == 'PowerControl' || !has(self.power)",
                    "action.power is only allowed when action.type is PowerControl",
                    field_path=".power",
                    reason="FieldValueForbidden",
                ),
                cel(
                    "self.type != 'VerifyPowerStatus' || has(self.expectedState)",
                    "action.expectedState is required when action.type is VerifyPowerStatus",
                    field_path=".expectedState",
                    reason="FieldValueRequired",
                ),
                cel(
                    "self.type != 'Sleep' || has(self.durationSeconds)",
                    "action.durationSeconds is required when action.type is Sleep",
                    field_path=".durationSeconds",
                    reason="FieldValueRequired",
                ),
                cel(
                    "self.type == 'Sleep' || !has(self.durationSeconds)",
                    "action.durationSeconds is only allowed when action.type is Sleep",
                    field_path=".durationSeconds",
                    reason="FieldValueForbidden",
                ),
            ]
        }
    )

    type: ActionType = Field(description="PowerControl, VerifyPowerStatus or Sleep.")
    power: PowerAction | None = Field(
        default=None, description="The Redfish reset to send; required for PowerControl."
    )
    expected_state: PowerState | None = Field(
        default=None,
        description="Required for VerifyPowerStatus; for PowerControl, the state to await.",
    )
    duration_seconds: float | None = Field(
        default=None, ge=0, le=86400, description="Required for Sleep."
    )
    poll_interval_seconds: float = Field(
        default=1.0, gt=0, le=60, description="How often to poll the power state."
    )

    @model_validator(mode="after")
    def _fields_match_type(self) -> StepAction:
        problems = []
        if self.type == ActionType.POWER_CONTROL and self.power is None:
            problems.append("action.power is required when action.type is PowerControl")
        if self.type != ActionType.POWER_CONTROL and self.power is not None:
            problems.append("action.power is only allowed when action.type is PowerControl")
        if self.type == ActionType.VERIFY_POWER_STATUS and self.expected_state is None:
            problems.append(
                "action.expectedState is required when action.type is VerifyPowerStatus"
            )
        if self.type == ActionType.SLEEP and self.duration_seconds is None:
            problems.append("action.durationSeconds is required when action.type is Sleep")
        if self.type != ActionType.SLEEP and self.duration_seconds is not None:
            problems.append("action.durationSeconds is only allowed when action.type is Sleep")
        if problems:
            raise ValueError("; ".join(problems))
        return self


class RuleStep(Model):
    """One step of a rule: an action on every component of one type, in one stage."""

    component_type: ComponentTypeField = Field(description="Component type the step targets.")
    stage: int = Field(
        ge=1, le=100, description="Stage number (>= 1). Stages run in ascending order."
    )
    max_parallel: int = Field(
        default=0, ge=0, le=10000, description="Components acted on at once; 0 means no limit."
    )
    timeout_seconds: float = Field(
        default=1200.0, gt=0, le=86400, description="Timeout of one attempt on one component."
    )
    retry: RetryPolicy = Field(default_factory=RetryPolicy, description="Retry policy.")
    action: StepAction


class CleanupTargets(enum.StrEnum):
    # The components of the step's type that this task sent a power request to.
    ACTED_ON = "ActedOn"
    # Every component of the step's type in the rack.
    ALL = "All"


class CleanupStep(RuleStep):
    """A step of the rule's cleanup, run after a graceful stop (cancel or deadline)."""

    stage: int = Field(
        ge=1,
        le=MAX_CLEANUP_STAGE,
        description="Cleanup stage number (>= 1); reported as stage 100 + this number.",
    )
    targets: CleanupTargets = Field(
        default=CleanupTargets.ACTED_ON,
        description="ActedOn (default): only the components of this type that the task sent"
        " a power request to; All: every component of this type.",
    )


def _stages(steps: list[RuleStep]) -> dict[int, list[RuleStep]]:
    out: dict[int, list[RuleStep]] = {}
    for step in sorted(steps, key=lambda s: s.stage):  # stable: keeps rule order
        out.setdefault(step.stage, []).append(step)
    return out


ONE_STEP_PER_TYPE_CEL = (
    "self.all(a, self.exists_one(b, a.stage == b.stage"
    " && (a.componentType == 'NVLSwitch' ? 'NVSwitch' : a.componentType)"
    " == (b.componentType == 'NVLSwitch' ? 'NVSwitch' : b.componentType)))"
)


class NicoOperationRuleSpec(Model):
    """How an operation runs: ordered stages, each with one step per component type."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    ONE_STEP_PER_TYPE_CEL.replace("self", "self.steps"),
                    "spec.steps: at most one step per componentType in a stage",
                    field_path=".steps",
                ),
                cel(
                    "!has(self.cleanup) || "
                    + ONE_STEP_PER_TYPE_CEL.replace("self", "self.cleanup"),
                    "spec.cleanup: at most one step per componentType in a stage",
                    field_path=".cleanup",
                ),
            ]
        }
    )

    rule_id: Uuid = Field(
        description="Stable id of the rule (the REST ruleId). Immutable.",
        json_schema_extra=immutable("spec.ruleId"),
    )
    operation: Operation = Field(
        description="Operation the rule implements. Immutable.",
        json_schema_extra=immutable("spec.operation"),
    )
    default: bool = Field(default=False, description="The default rule for its operation.")
    description: str = Field(default="", max_length=1024, description="Human-readable text.")
    workflow_timeout_seconds: float = Field(
        default=3600.0, gt=0, le=7 * 86400, description="Timeout of the whole task."
    )
    steps: list[RuleStep] = Field(
        min_length=1, max_length=64, description="The steps, in order within each stage."
    )
    cleanup: list[CleanupStep] = Field(
        default_factory=list,
        max_length=16,
        description="Steps run after a graceful stop (a cancel in Graceful mode, or a"
        " deadline), to leave the rack in a known state: e.g. ForceOff the compute trays a"
        " cancelled PowerOn powered on. Not run after a Terminate, a failure or a success.",
    )
    cleanup_timeout_seconds: float = Field(
        default=600.0, gt=0, le=86400, description="Timeout of the whole cleanup."
    )

    @model_validator(mode="after")
    def _one_step_per_type_and_stage(self) -> NicoOperationRuleSpec:
        for field, steps in (("steps", self.steps), ("cleanup", self.cleanup)):
            seen: set[tuple[int, ComponentType]] = set()
            for step in steps:
                key = (step.stage, step.component_type)
                if key in seen:
                    raise ValueError(
                        f"spec.{field}: at most one step per componentType in a stage "
                        f"(stage {step.stage}, {step.component_type.value} repeated)"
                    )
                seen.add(key)
        return self

    def stages(self) -> dict[int, list[RuleStep]]:
        """The rule's steps grouped by stage number, stages ascending, steps in rule order."""
        return _stages(list(self.steps))

    def cleanup_stages(self) -> dict[int, list[CleanupStep]]:
        """The cleanup's steps by their report stage number (100 + stage), ascending."""
        return {
            CLEANUP_STAGE_OFFSET + number: [s for s in steps if isinstance(s, CleanupStep)]
            for number, steps in _stages(list(self.cleanup)).items()
        }


def report_matches_rule(report: TaskReportV1, rule: NicoOperationRuleSpec) -> list[str]:
    """Problems with `report` as a mirror of `rule` (empty when it mirrors it).

    Every report stage is a rule stage (numbers from 1, ascending, no repeats) or a
    cleanup stage (100 + its number),
    and its steps pair 1:1, by index, with the rule's steps of that stage
    (same component type; NVLSwitch and NVSwitch are one type). A report may
    list fewer stages than the rule (the rest not reached yet) but never others.
    """
    problems: list[str] = []
    rule_stages = rule.stages()
    cleanup_stages: dict[int, list[RuleStep]] = {
        n: list(steps) for n, steps in rule.cleanup_stages().items()
    }
    previous = 0
    for stage in report.stages:
        where = f"stage {stage.number}"
        if stage.number < 1:
            problems.append(f"{where}: stage numbers start at 1")
        if stage.number <= previous:
            problems.append(f"{where}: stages must be unique and ascending")
        previous = max(previous, stage.number)
        expected = rule_stages.get(stage.number) or cleanup_stages.get(stage.number)
        if expected is None:
            problems.append(f"{where}: the rule has no such stage")
            continue
        if len(stage.steps) != len(expected):
            problems.append(f"{where}: {len(stage.steps)} steps, the rule has {len(expected)}")
        for index, (got, want) in enumerate(zip(stage.steps, expected, strict=False)):
            if canonical_component_type(got.component_type) != want.component_type.value:
                problems.append(
                    f"{where} step {index}: componentType {got.component_type!r},"
                    f" the rule says {want.component_type.value!r}"
                )
    return problems


class NicoOperationRule(Resource):
    """A rule ("Flow" upstream): the stages and steps that implement one operation."""

    kind: Literal["NicoOperationRule"] = "NicoOperationRule"
    spec: NicoOperationRuleSpec


RULE_RESOURCE = CustomResource(
    model=NicoOperationRule,
    plural=RULES,
    short_names=("nrule", "nrules"),
    namespaced=True,
    columns=(
        column("Operation", ".spec.operation"),
        column("Default", ".spec.default", "boolean"),
        column("Rule ID", ".spec.ruleId"),
        AGE_COLUMN,
        column("Description", ".spec.description", priority=1),
    ),
    selectable_fields=(".spec.operation", ".spec.ruleId"),
)
