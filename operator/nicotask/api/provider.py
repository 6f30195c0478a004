"""NicoProvider: an org's Infrastructure Provider (cluster-scoped), and its CRD metadata."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .common import (
    AGE_COLUMN,
    CustomResource,
    DisplayName,
    Model,
    Resource,
    Uuid,
    column,
    immutable,
)

PROVIDERS = "nicoproviders"


class NicoProviderSpec(Model):
    """An Infrastructure Provider and the org that owns it."""

    org: str = Field(min_length=1, max_length=256, description="Org that owns the provider.")
    provider_id: Uuid = Field(
        description="UUID of the provider. Immutable.",
        json_schema_extra=immutable("spec.providerId"),
    )
    display_name: DisplayName = ""


class NicoProvider(Resource):
    """An org's Infrastructure Provider (cluster-scoped)."""

    kind: Literal["NicoProvider"] = "NicoProvider"
    spec: NicoProviderSpec


PROVIDER_RESOURCE = CustomResource(
    model=NicoProvider,
    plural=PROVIDERS,
    short_names=("nprov", "nprovs"),
    namespaced=False,
    columns=(
        column("Org", ".spec.org"),
        column("Provider ID", ".spec.providerId"),
        column("Display Name", ".spec.displayName"),
        AGE_COLUMN,
    ),
    selectable_fields=(".spec.org",),
)
