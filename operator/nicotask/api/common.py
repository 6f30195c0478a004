"""Shared pieces of the API: group/version, field types, enumerations, the model base,
object metadata, conditions, and the CRD metadata every kind module declares.

Field names on the wire are camelCase; Python attributes are snake_case.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass
from typing import Annotated, Any, Final, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
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


def rfc3339(value: dt.datetime) -> str:
    """Always to the microsecond, so times written by different writers compare as text too."""
    return _to_utc(value).isoformat(timespec="microseconds").replace("+00:00", "Z")


Timestamp = Annotated[
    dt.datetime,
    AfterValidator(_to_utc),
    PlainSerializer(rfc3339, return_type=str, when_used="json-unless-none"),
    Field(json_schema_extra={"format": "date-time"}),
]
ErrorText = Annotated[str, AfterValidator(truncate_utf8)]
DisplayName = Annotated[str, Field(max_length=256, description="Human-readable name.")]
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
# The same set as wire values, in the enum's order: Succeeded, Failed, Terminated.
FINISHED_STATUS_VALUES: tuple[str, ...] = tuple(s.value for s in TaskStatus if s.finished)


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
# Object metadata and conditions (every custom resource)
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


class Resource(Model):
    """Base of the custom resource models: apiVersion, kind and metadata; a subclass
    narrows `kind` to its name and adds spec (and status). Unknown top-level fields
    are ignored."""

    model_config = ConfigDict(extra="ignore")

    api_version: Literal["nico.dev/v1alpha1"] = API_VERSION
    kind: str
    metadata: ObjectMeta


# --------------------------------------------------------------------------
# CRD metadata (each kind module declares one, next to its model)
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class CustomResource:
    """How one kind is served: its names, scope, printer columns and selectable fields.

    crdgen.py turns the model and this metadata into the kind's CRD.
    """

    model: type[BaseModel]
    plural: str
    short_names: tuple[str, ...]
    namespaced: bool
    columns: tuple[dict[str, Any], ...]
    selectable_fields: tuple[str, ...] = ()
    status_subresource: bool = False
    extra_categories: tuple[str, ...] = ()

    @property
    def kind(self) -> str:
        return self.model.__name__

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{GROUP}"

    @property
    def filename(self) -> str:
        return f"{GROUP}_{self.plural}.yaml"

    def manifest(self, name: str, spec: dict[str, Any], **metadata: Any) -> dict[str, Any]:
        """A new object of this kind as the API server takes it (apiVersion, kind, metadata)."""
        return {
            "apiVersion": API_VERSION,
            "kind": self.kind,
            "metadata": {"name": name, **metadata},
            "spec": spec,
        }


def column(name: str, path: str, type_: str = "string", priority: int = 0, **kw: Any) -> dict:
    """One additionalPrinterColumns entry."""
    out: dict[str, Any] = {"name": name, "type": type_, "jsonPath": path}
    if priority:
        out["priority"] = priority
    out.update(kw)
    return out


AGE_COLUMN = column("Age", ".metadata.creationTimestamp", "date")
