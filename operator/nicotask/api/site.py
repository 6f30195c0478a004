"""NicoSite: a site of a provider (cluster-scoped), and its CRD metadata."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field

from .common import (
    AGE_COLUMN,
    API_VERSION,
    CustomResource,
    Model,
    ObjectMeta,
    Uuid,
    column,
    immutable,
)

SITES = "nicosites"


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


SITE_RESOURCE = CustomResource(
    model=NicoSite,
    plural=SITES,
    short_names=("nsite", "nsites"),
    namespaced=False,
    columns=(
        column("Site ID", ".spec.siteId"),
        column("Provider", ".spec.providerRef"),
        column("Display Name", ".spec.displayName"),
        AGE_COLUMN,
    ),
    selectable_fields=(".spec.siteId", ".spec.providerRef"),
)
