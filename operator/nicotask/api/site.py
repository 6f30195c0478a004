"""NicoSite: a site of a provider (cluster-scoped), and its CRD metadata.

One siteId, one NicoSite, by construction: a NicoSite's name is its siteId in
lower case (a CEL rule on the CRD's root, and the model's own check), and
cluster-scoped names are unique, so the API server refuses a second NicoSite
for a site, whatever the case of its siteId.
"""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field, model_validator

from .common import (
    AGE_COLUMN,
    CustomResource,
    DisplayName,
    Model,
    Resource,
    Uuid,
    cel,
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


NAME_IS_SITE_ID = (
    "metadata.name must be spec.siteId in lower case: one NicoSite per site, "
    "named after it (a second NicoSite for a siteId is refused)"
)


class NicoSite(Resource):
    """A site of a provider (cluster-scoped). Its name is its siteId in lower case."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "self.metadata.name == self.spec.siteId.lowerAscii()",
                    NAME_IS_SITE_ID,
                    field_path=".spec.siteId",
                )
            ]
        }
    )

    kind: Literal["NicoSite"] = "NicoSite"
    spec: NicoSiteSpec

    @model_validator(mode="after")
    def _named_after_its_site(self) -> NicoSite:
        if self.metadata.name != self.spec.site_id.lower():
            raise ValueError(NAME_IS_SITE_ID)
        return self


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
