"""The org -> NicoProvider -> NicoSite checks (upstream's order and messages), from the caches.

An org has an Infrastructure Provider when a NicoProvider has spec.org ==
org. A site is known when its NicoSite exists (named after the siteId, so one
per site: the CRD refuses a second), and belongs to the org when its
spec.providerRef names one of the org's providers.
"""

from __future__ import annotations

import re

from nicotask.api import UUID_PATTERN

from . import errors
from .cache import ProviderCache, SiteCache

_UUID = re.compile(UUID_PATTERN)


def is_uuid(value: object) -> bool:
    return isinstance(value, str) and _UUID.fullmatch(value) is not None


async def provider_names(providers: ProviderCache, org: str) -> set[str]:
    """Names of the org's NicoProviders; 400 when it has none."""
    names = await providers.provider_names(org)
    if not names:
        raise errors.APIError(400, errors.NO_PROVIDER)
    return names


async def check_site(sites: SiteCache, providers: set[str], site_id: str) -> None:
    """Pass when `site_id` is a valid, known site of one of `providers`; else 400/403."""
    if not is_uuid(site_id):
        raise errors.APIError(400, errors.BAD_SITE_ID)
    site = await sites.find(site_id)
    if site is None:
        raise errors.APIError(400, errors.UNKNOWN_SITE)
    if site.provider_ref not in providers:
        raise errors.APIError(403, errors.FOREIGN_SITE)
