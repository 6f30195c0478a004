"""The org -> NicoProvider -> NicoSite checks (upstream's order and messages).

An org has an Infrastructure Provider when a NicoProvider has spec.org ==
org. A site is known when a NicoSite has spec.siteId == siteId, and belongs
to the org when its spec.providerRef names one of the org's providers.
Both are fresh, field-selected LISTs (selectable fields of the CRDs).
"""

from __future__ import annotations

import re
from typing import Any

from nicotask.api import UUID_PATTERN

from . import errors
from .store import Store

_UUID = re.compile(UUID_PATTERN)


def is_uuid(value: object) -> bool:
    return isinstance(value, str) and _UUID.fullmatch(value) is not None


async def provider_names(store: Store, org: str) -> set[str]:
    """Names of the org's NicoProviders; 400 when it has none."""
    providers = await store.providers_of_org(org)
    names = {p["metadata"]["name"] for p in providers if p.get("metadata", {}).get("name")}
    if not names:
        raise errors.APIError(400, errors.NO_PROVIDER)
    return names


async def check_site(store: Store, providers: set[str], site_id: str) -> dict[str, Any]:
    """The NicoSite of `site_id` if it is valid, known and the org's; else 400/403."""
    if not is_uuid(site_id):
        raise errors.APIError(400, errors.BAD_SITE_ID)
    site = await store.site(site_id)
    if site is None:
        raise errors.APIError(400, errors.UNKNOWN_SITE)
    if site.get("spec", {}).get("providerRef") not in providers:
        raise errors.APIError(403, errors.FOREIGN_SITE)
    return site
