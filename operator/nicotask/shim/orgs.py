"""The org -> NicoProvider -> NicoSite checks (upstream's order and messages), from the caches.

An org has an Infrastructure Provider when a NicoProvider has spec.org ==
org. A site is known when a NicoSite has spec.siteId == siteId, and belongs
to the org when its spec.providerRef names one of the org's providers.
A siteId claimed by NicoSites of different providers is refused for everyone
(403, logged): which provider owns it is never guessed.
"""

from __future__ import annotations

import logging
import re

from nicotask.api import UUID_PATTERN

from . import errors
from .cache import ProviderCache, SiteCache

log = logging.getLogger(__name__)

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
    claims = await sites.site_claims(site_id)
    if not claims:
        raise errors.APIError(400, errors.UNKNOWN_SITE)
    owners = {c.provider_ref for c in claims}
    if len(owners) > 1:
        log.warning(
            "refused a request for siteId %s: claimed by NicoSites of providers %s",
            site_id, ", ".join(sorted(owners)),
        )
        raise errors.APIError(403, errors.AMBIGUOUS_SITE)
    if not owners <= providers:
        raise errors.APIError(403, errors.FOREIGN_SITE)
