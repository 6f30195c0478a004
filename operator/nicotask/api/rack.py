"""NicoRack: a rack, its components and their BMCs, and its CRD metadata."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field, model_validator

from .common import (
    AGE_COLUMN,
    GROUP,
    ComponentTypeField,
    CustomResource,
    Model,
    Operation,
    Resource,
    Uuid,
    cel,
    column,
    immutable,
    list_map,
)

RACKS = "nicoracks"

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


class NicoRack(Resource):
    """A rack: its site, its components and how to reach their BMCs."""

    kind: Literal["NicoRack"] = "NicoRack"
    spec: NicoRackSpec


RACK_RESOURCE = CustomResource(
    model=NicoRack,
    plural=RACKS,
    short_names=("nrack", "nracks"),
    namespaced=True,
    columns=(
        column("Site", ".spec.siteId"),
        column("Credentials", ".spec.credentials.name"),
        AGE_COLUMN,
        column("Description", ".spec.description", priority=1),
    ),
    selectable_fields=(".spec.siteId",),
)
