"""The API: pydantic models are the only definition of every schema we serve.

Two families live here:
- the REST contract of contract/openapi.yaml (Task, TaskReportV1, NICoAPIError);
- the custom resources (NicoTask, NicoOperationRule, NicoRack, NicoProvider,
  NicoSite), from which crdgen.py generates crds/*.yaml.

Field names on the wire are camelCase; Python attributes are snake_case.
"""

from __future__ import annotations

import datetime as dt
import enum
from typing import Annotated, Any, Final, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic.json_schema import JsonDict

GROUP = "nico.dev"
VERSION = "v1alpha1"
API_VERSION: Final = "nico.dev/v1alpha1"
assert f"{GROUP}/{VERSION}" == API_VERSION

ERROR_LIMIT_BYTES = 512
UUID_PATTERN = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


def truncate_utf8(text: str, limit: int = ERROR_LIMIT_BYTES) -> str:
    """Cut text to at most `limit` UTF-8 bytes without splitting a character."""
    raw = text.encode("utf-8")
    if len(raw) <= limit:
        return text
    return raw[:limit].decode("utf-8", errors="ignore")


def first_line_error(text: str) -> str:
    """Upstream's failure message: the first line of the error, cut to 512 bytes."""
    line = text.strip().splitlines()[0] if text.strip() else "unknown error"
    return truncate_utf8(line)


def _to_utc(value: dt.datetime) -> dt.datetime:
    if value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC)


def _rfc3339(value: dt.datetime) -> str:
    """Always to the microsecond, so times written by different writers compare as text too."""
    return _to_utc(value).isoformat(timespec="microseconds").replace("+00:00", "Z")


Timestamp = Annotated[
    dt.datetime,
    AfterValidator(_to_utc),
    PlainSerializer(_rfc3339, return_type=str, when_used="json-unless-none"),
    Field(json_schema_extra={"format": "date-time"}),
]
ErrorText = Annotated[str, AfterValidator(truncate_utf8)]
Uuid = Annotated[
    str, Field(pattern=UUID_PATTERN, max_length=36, json_schema_extra={"format": "uuid"})
]


def cel(
    rule: str,
    message: str,
    field_path: str | None = None,
    reason: str | None = None,
) -> JsonDict:
    """One Kubernetes CEL validation rule (an `x-kubernetes-validations` entry)."""
    out: JsonDict = {"rule": rule, "message": message}
    if field_path:
        out["fieldPath"] = field_path
    if reason:
        out["reason"] = reason
    return out


def immutable(path: str) -> dict[str, Any]:
    """Schema extra for a required field that cannot change after creation."""
    return {"x-kubernetes-validations": [cel("self == oldSelf", f"{path} is immutable")]}


def list_map(*keys: str) -> dict[str, Any]:
    """Schema extra: a list whose items are unique by `keys` (enforced by the API server)."""
    return {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": list(keys)}


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Model(BaseModel):
    """Base for every API model: camelCase on the wire, unknown fields refused."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_enum_values=False,
    )

    def wire(self) -> dict[str, Any]:
        """The JSON-ready dict as stored in Kubernetes or served over REST."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


# --------------------------------------------------------------------------
# Enumerations
# --------------------------------------------------------------------------


class TaskStatus(enum.StrEnum):
    UNKNOWN = "Unknown"
    PENDING = "Pending"
    WAITING = "Waiting"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    TERMINATED = "Terminated"

    @property
    def finished(self) -> bool:
        return self in FINISHED_STATUSES


FINISHED_STATUSES = frozenset({TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.TERMINATED})


class ReportStatus(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    SKIPPED = "skipped"


class Operation(enum.StrEnum):
    POWER_ON = "PowerOn"
    POWER_OFF = "PowerOff"
    POWER_CYCLE = "PowerCycle"
    FORCE_OFF = "ForceOff"
    FORCE_CYCLE = "ForceCycle"


class ComponentType(enum.StrEnum):
    COMPUTE = "Compute"
    NVSWITCH = "NVSwitch"
    POWER_SHELF = "PowerShelf"


# The contract's examples spell the switch type NVLSwitch; both mean one type.
COMPONENT_TYPE_ALIASES = {"NVLSwitch": ComponentType.NVSWITCH.value}
COMPONENT_TYPE_SPELLINGS = [t.value for t in ComponentType] + list(COMPONENT_TYPE_ALIASES)


def _canonical_component_type(value: Any) -> Any:
    if isinstance(value, str):
        return COMPONENT_TYPE_ALIASES.get(value, value)
    return value


def canonical_component_type(value: str) -> str:
    """`NVLSwitch` -> `NVSwitch`; other spellings unchanged."""
    return COMPONENT_TYPE_ALIASES.get(value, value)


ComponentTypeField = Annotated[
    ComponentType,
    BeforeValidator(_canonical_component_type),
    Field(json_schema_extra={"enum": COMPONENT_TYPE_SPELLINGS, "maxLength": 16}),
]


class ActionType(enum.StrEnum):
    POWER_CONTROL = "PowerControl"
    VERIFY_POWER_STATUS = "VerifyPowerStatus"
    SLEEP = "Sleep"


class PowerAction(enum.StrEnum):
    """Redfish ComputerSystem.Reset types we drive, plus a composite cycle."""

    ON = "On"
    FORCE_OFF = "ForceOff"
    GRACEFUL_SHUTDOWN = "GracefulShutdown"
    POWER_CYCLE = "PowerCycle"
    FORCE_RESTART = "ForceRestart"


class PowerState(enum.StrEnum):
    ON = "On"
    OFF = "Off"


# --------------------------------------------------------------------------
# REST contract (contract/openapi.yaml)
# --------------------------------------------------------------------------


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


# --------------------------------------------------------------------------
# Custom resources
# --------------------------------------------------------------------------


class ObjectMeta(BaseModel):
    """The few metadata fields we read; everything else passes through."""

    model_config = ConfigDict(extra="allow", populate_by_name=True, alias_generator=to_camel)

    name: str
    namespace: str | None = None
    uid: str | None = None
    resource_version: str | None = None
    generation: int | None = None
    creation_timestamp: Timestamp | None = None
    deletion_timestamp: Timestamp | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    finalizers: list[str] = Field(default_factory=list)


class Condition(Model):
    """kstatus-style condition (Ready, Reconciling, Stalled, CancelPending...)."""

    type: str = Field(min_length=1, max_length=316, description="Condition type, e.g. Ready.")
    status: Literal["True", "False", "Unknown"]
    reason: str = Field(default="", max_length=1024)
    message: str = Field(default="", max_length=32768)
    last_transition_time: Timestamp | None = None
    observed_generation: int | None = Field(default=None, ge=0)


# ---- NicoTask -------------------------------------------------------------


TERMINAL_STATUS_CEL = "['Succeeded', 'Failed', 'Terminated']"


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


class NicoTask(Model):
    """A NICo rack task: run `operation` on the rack `rackRef`, as a Temporal workflow."""

    model_config = ConfigDict(extra="ignore")

    api_version: Literal["nico.dev/v1alpha1"] = API_VERSION
    kind: Literal["NicoTask"] = "NicoTask"
    metadata: ObjectMeta
    spec: NicoTaskSpec
    status: NicoTaskStatus = Field(default_factory=NicoTaskStatus)


# ---- NicoOperationRule ----------------------------------------------------


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


class NicoOperationRuleSpec(Model):
    """How an operation runs: ordered stages, each with one step per component type."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "self.steps.all(a, self.steps.exists_one(b, a.stage == b.stage"
                    " && (a.componentType == 'NVLSwitch' ? 'NVSwitch' : a.componentType)"
                    " == (b.componentType == 'NVLSwitch' ? 'NVSwitch' : b.componentType)))",
                    "spec.steps: at most one step per componentType in a stage",
                    field_path=".steps",
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

    @model_validator(mode="after")
    def _one_step_per_type_and_stage(self) -> NicoOperationRuleSpec:
        seen: set[tuple[int, ComponentType]] = set()
        for step in self.steps:
            key = (step.stage, step.component_type)
            if key in seen:
                raise ValueError(
                    f"spec.steps: at most one step per componentType in a stage "
                    f"(stage {step.stage}, {step.component_type.value} repeated)"
                )
            seen.add(key)
        return self

    def stages(self) -> dict[int, list[RuleStep]]:
        """The rule's steps grouped by stage number, stages ascending, steps in rule order."""
        out: dict[int, list[RuleStep]] = {}
        for step in sorted(self.steps, key=lambda s: s.stage):  # stable: keeps rule order
            out.setdefault(step.stage, []).append(step)
        return out


def report_matches_rule(report: TaskReportV1, rule: NicoOperationRuleSpec) -> list[str]:
    """Problems with `report` as a mirror of `rule` (empty when it mirrors it).

    Every report stage is a rule stage (numbers from 1, ascending, no repeats),
    and its steps pair 1:1, by index, with the rule's steps of that stage
    (same component type; NVLSwitch and NVSwitch are one type). A report may
    list fewer stages than the rule (the rest not reached yet) but never others.
    """
    problems: list[str] = []
    rule_stages = rule.stages()
    previous = 0
    for stage in report.stages:
        where = f"stage {stage.number}"
        if stage.number < 1:
            problems.append(f"{where}: stage numbers start at 1")
        if stage.number <= previous:
            problems.append(f"{where}: stages must be unique and ascending")
        previous = max(previous, stage.number)
        expected = rule_stages.get(stage.number)
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


class NicoOperationRule(Model):
    """A rule ("Flow" upstream): the stages and steps that implement one operation."""

    model_config = ConfigDict(extra="ignore")

    api_version: Literal["nico.dev/v1alpha1"] = API_VERSION
    kind: Literal["NicoOperationRule"] = "NicoOperationRule"
    metadata: ObjectMeta
    spec: NicoOperationRuleSpec


# ---- NicoRack -------------------------------------------------------------


BMC_CREDENTIALS_LABEL = f"{GROUP}/bmc-credentials"


class SecretRef(Model):
    """A Secret in the object's namespace holding BMC credentials.

    Only Secrets labelled `nico.dev/bmc-credentials: "true"` are used.
    """

    name: str = Field(min_length=1, max_length=253, description="Secret name.")
    username_key: str = Field(default="username", max_length=253, description="Key of the user.")
    password_key: str = Field(
        default="password", max_length=253, description="Key of the password."
    )


class RedfishEndpoint(Model):
    """Where and how to reach a component's BMC."""

    endpoint: str = Field(
        pattern=r"^https?://",
        max_length=2048,
        description="Base URL of the BMC, e.g. https://10.0.0.5.",
    )
    system_id: str | None = Field(
        default=None,
        max_length=256,
        description="ComputerSystem id; the BMC's only system when unset.",
    )
    credentials: SecretRef | None = Field(
        default=None, description="Overrides the rack's credentials for this BMC."
    )


class RackComponent(Model):
    """One component (compute tray, NVLink switch, power shelf) of the rack."""

    id: str = Field(min_length=1, max_length=128, description="Unique id within the rack.")
    type: ComponentTypeField = Field(description="Compute, NVSwitch (or NVLSwitch), PowerShelf.")
    redfish: RedfishEndpoint


class RackRule(Model):
    """The rule to use for one operation on this rack."""

    operation: Operation
    rule_id: Uuid = Field(description="ruleId of a NicoOperationRule.")


class TlsSettings(Model):
    """TLS to the BMCs."""

    insecure_skip_verify: bool = Field(default=False, description="Skip certificate checks.")
    ca_secret_ref: str | None = Field(
        default=None,
        max_length=253,
        description="Secret with key ca.crt to verify the BMCs' certificates; it must carry"
        " the label nico.dev/bmc-credentials=true.",
    )
    allow_insecure_http: bool = Field(
        default=False,
        description="Allow http:// BMC endpoints (credentials in clear text); https:// only"
        " when false.",
    )


class NicoRackSpec(Model):
    """A rack of one site, its components and their BMCs."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "(has(self.tls) && has(self.tls.allowInsecureHttp)"
                    " && self.tls.allowInsecureHttp)"
                    " || !has(self.components)"
                    " || self.components.all(c, !c.redfish.endpoint.startsWith('http://'))",
                    "spec.components: http:// BMC endpoints need spec.tls.allowInsecureHttp: true",
                    field_path=".components",
                ),
            ]
        }
    )

    site_id: Uuid = Field(
        description="UUID of the Site of the rack. Immutable.",
        json_schema_extra=immutable("spec.siteId"),
    )
    description: str = Field(default="", max_length=1024, description="Human-readable text.")
    credentials: SecretRef = Field(description="Default BMC credentials of the rack.")
    tls: TlsSettings = Field(default_factory=TlsSettings, description="TLS to the BMCs.")
    components: list[RackComponent] = Field(
        default_factory=list,
        max_length=512,
        description="Components of the rack, unique by id.",
        json_schema_extra=list_map("id"),
    )
    rules: list[RackRule] = Field(
        default_factory=list,
        max_length=16,
        description="Rules associated with this rack, at most one per operation.",
        json_schema_extra=list_map("operation"),
    )

    @model_validator(mode="after")
    def _unique_keys(self) -> NicoRackSpec:
        ids = [c.id for c in self.components]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"spec.components: duplicate component ids {dupes}")
        plain = [c.id for c in self.components if c.redfish.endpoint.startswith("http://")]
        if plain and not self.tls.allow_insecure_http:
            # Same rule as the CRD's CEL rule (one model, one meaning).
            raise ValueError(
                "spec.components: http:// BMC endpoints need spec.tls.allowInsecureHttp: true"
                f" ({', '.join(plain[:5])})"
            )
        ops = [r.operation.value for r in self.rules]
        dupes = sorted({o for o in ops if ops.count(o) > 1})
        if dupes:
            raise ValueError(f"spec.rules: more than one rule for {dupes}")
        return self


class NicoRack(Model):
    """A rack: its site, its components and how to reach their BMCs."""

    model_config = ConfigDict(extra="ignore")

    api_version: Literal["nico.dev/v1alpha1"] = API_VERSION
    kind: Literal["NicoRack"] = "NicoRack"
    metadata: ObjectMeta
    spec: NicoRackSpec


# ---- NicoProvider / NicoSite ----------------------------------------------


class NicoProviderSpec(Model):
    """An Infrastructure Provider and the org that owns it."""

    org: str = Field(min_length=1, max_length=256, description="Org that owns the provider.")
    provider_id: Uuid = Field(
        description="UUID of the provider. Immutable.",
        json_schema_extra=immutable("spec.providerId"),
    )
    display_name: str = Field(default="", max_length=256, description="Human-readable name.")


class NicoProvider(Model):
    """An org's Infrastructure Provider (cluster-scoped)."""

    model_config = ConfigDict(extra="ignore")

    api_version: Literal["nico.dev/v1alpha1"] = API_VERSION
    kind: Literal["NicoProvider"] = "NicoProvider"
    metadata: ObjectMeta
    spec: NicoProviderSpec


class NicoSiteSpec(Model):
    """A site and the provider it belongs to."""

    site_id: Uuid = Field(
        description="UUID of the site (the REST siteId). Immutable.",
        json_schema_extra=immutable("spec.siteId"),
    )
    provider_ref: str = Field(min_length=1, max_length=253, description="NicoProvider name.")
    display_name: str = Field(default="", max_length=256, description="Human-readable name.")


class NicoSite(Model):
    """A site of a provider (cluster-scoped)."""

    model_config = ConfigDict(extra="ignore")

    api_version: Literal["nico.dev/v1alpha1"] = API_VERSION
    kind: Literal["NicoSite"] = "NicoSite"
    metadata: ObjectMeta
    spec: NicoSiteSpec
