"""NicoSite: a site of a provider (cluster-scoped), and its CRD metadata."""

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

SITES = "nicosites"


class NicoSiteSpec(Model):
    """A site and the provider it belongs to."""

    site_id: Uuid = Field(
        description="UUID of the site (the REST siteId). Immutable.",
        json_schema_extra=immutable("spec.siteId"),
    )
    provider_ref: str = Field(min_length=1, max_length=253, description="NicoProvider name.")
    display_name: DisplayName = ""


class NicoSite(Resource):
    """A site of a provider (cluster-scoped)."""

    kind: Literal["NicoSite"] = "NicoSite"
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
