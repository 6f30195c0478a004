"""The shim's watch-fed caches: NicoProviders, NicoSites and NicoTasks.

Requests are answered from these caches; the only API call a request makes
is the cancel's PATCH (and, on a conflict, one GET). Each cache is an
Informer plus the secondary index its readers need:

- providers: org -> provider names;
- sites: siteId (lower case) -> its NicoSite's providerRef (a NicoSite is named
  after its siteId, so there is one per site);
- tasks: uid -> TaskRecord (what routes need, with the REST views already
  encoded), rack -> uids. A task that does not parse as a NicoTask is left
  out with a log line, so one bad object never breaks the others.

Until a cache has listed once, readers get 503. A miss waits up to
`miss_wait` seconds for the watch (a task created a moment ago), never LISTs.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import orjson
from kubernetes_asyncio import client
from pydantic import ValidationError

from nicotask import api
from nicotask.kube import PROVIDERS, SITES, TASKS
from nicotask.shim.rest_task import task_model

from . import errors
from .informer import Informer, Obj

log = logging.getLogger(__name__)


def _spec(obj: Obj | None) -> dict[str, Any]:
    spec = (obj or {}).get("spec")
    return spec if isinstance(spec, dict) else {}


def _meta(obj: Obj | None) -> dict[str, Any]:
    meta = (obj or {}).get("metadata")
    return meta if isinstance(meta, dict) else {}


class _Cache:
    kind = ""

    def __init__(self, informer: Informer, miss_wait: float) -> None:
        self.informer = informer
        self.miss_wait = miss_wait

    def require_synced(self) -> None:
        if not self.informer.synced.is_set():
            raise errors.Unavailable(f"the cache of {self.kind} has not synced yet")


# ---- providers ------------------------------------------------------------------


class ProviderCache(_Cache):
    kind = "NicoProviders"

    def __init__(self, api_client: client.ApiClient, miss_wait: float) -> None:
        self.by_org: dict[str, dict[str, str]] = defaultdict(dict)  # org -> uid -> name
        super().__init__(Informer(api_client, PROVIDERS, on_change=self._changed), miss_wait)

    def _changed(self, old: Obj | None, new: Obj | None) -> None:
        if old is not None:
            org = _spec(old).get("org")
            if isinstance(org, str):
                self.by_org[org].pop(_meta(old).get("uid", ""), None)
                if not self.by_org[org]:
                    del self.by_org[org]
        if new is not None:
            org, name = _spec(new).get("org"), _meta(new).get("name")
            if isinstance(org, str) and isinstance(name, str):
                self.by_org[org][_meta(new)["uid"]] = name

    def names(self, org: str) -> set[str]:
        found = self.by_org.get(org)
        return set(found.values()) if found else set()

    async def provider_names(self, org: str) -> set[str]:
        self.require_synced()
        return set(await self.informer.wait_until(lambda: self.names(org), self.miss_wait))


# ---- sites ------------------------------------------------------------------------


@dataclass(frozen=True)
class Site:
    name: str  # = its siteId, lower case
    provider_ref: str


class SiteCache(_Cache):
    """The NicoSites by siteId. A NicoSite's name is its siteId in lower case (the CRD
    refuses any other name), so there is one per site; one not named so (made before
    the CRD said so) is left out with a warning naming it and what to do."""

    kind = "NicoSites"

    def __init__(self, api_client: client.ApiClient, miss_wait: float) -> None:
        self.by_site: dict[str, Site] = {}  # name (= siteId, lower case) -> site
        super().__init__(Informer(api_client, SITES, on_change=self._changed), miss_wait)

    def _changed(self, old: Obj | None, new: Obj | None) -> None:
        if old is not None:
            self.by_site.pop(str(_meta(old).get("name")), None)
        if new is not None:
            site, ref, name = (
                _spec(new).get("siteId"),
                _spec(new).get("providerRef"),
                _meta(new).get("name"),
            )
            if not (isinstance(site, str) and isinstance(ref, str) and isinstance(name, str)):
                return
            if name != site.lower():
                log.warning(
                    "NicoSite %s is ignored: its name is not its siteId %s in lower case; "
                    "create it again as %s (docs/operations.md, upgrading)",
                    name,
                    site,
                    site.lower(),
                )
                return
            self.by_site[name] = Site(name, ref)

    def site(self, site_id: str) -> Site | None:
        return self.by_site.get(site_id.lower())

    async def find(self, site_id: str) -> Site | None:
        """The NicoSite of `site_id` (after a short wait for the watch), or None."""
        self.require_synced()
        found: Site | None = await self.informer.wait_until(
            lambda: self.site(site_id), self.miss_wait
        )
        return found


# ---- tasks ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskRecord:
    """What the routes need of one NicoTask, with its REST views encoded once."""

    uid: str
    namespace: str
    name: str
    resource_version: str
    site_id: str  # lower case
    rack_ref: str
    cancel: bool  # a hard cancel is requested (a graceful stop is not: REST escalates it)
    status: api.TaskStatus
    created_key: tuple[str, str]  # (creationTimestamp, name): list order
    full: bytes  # the REST Task with its report
    brief: bytes  # without the report (lists)

    @property
    def finished(self) -> bool:
        return self.status.finished


def record_of(obj: Obj) -> TaskRecord | None:
    """The record of a raw NicoTask, or None (with a log line) when it does not parse."""
    meta, spec = _meta(obj), _spec(obj)
    try:
        model = task_model(obj, include_report=True)
    except (ValidationError, ValueError, TypeError) as exc:
        log.warning(
            "skipping NicoTask %s/%s (uid %s): it does not parse: %s",
            meta.get("namespace"),
            meta.get("name"),
            meta.get("uid"),
            str(exc).replace("\n", "; ")[:500],
        )
        return None
    full = model.wire()
    brief = dict(full)
    brief.pop("report", None)
    return TaskRecord(
        uid=str(meta["uid"]),
        namespace=str(meta.get("namespace") or ""),
        name=str(meta["name"]),
        resource_version=str(meta.get("resourceVersion") or ""),
        site_id=str(spec.get("siteId") or "").lower(),
        rack_ref=str(spec.get("rackRef") or ""),
        cancel=spec.get("cancel") is True and spec.get("cancelMode") != api.StopMode.GRACEFUL,
        status=model.status,
        created_key=(str(meta.get("creationTimestamp") or ""), str(meta.get("name") or "")),
        full=orjson.dumps(full),
        brief=orjson.dumps(brief),
    )


class TaskCache(_Cache):
    kind = "NicoTasks"

    def __init__(
        self, api_client: client.ApiClient, namespaces: list[str], miss_wait: float
    ) -> None:
        self.records: dict[str, TaskRecord] = {}
        self.by_rack: dict[str, set[str]] = defaultdict(set)
        self.namespaces = list(namespaces)
        super().__init__(
            Informer(api_client, TASKS, namespaces, on_change=self._changed), miss_wait
        )

    def _changed(self, old: Obj | None, new: Obj | None) -> None:
        uid = _meta(new or old).get("uid", "")
        before = self.records.pop(uid, None)
        if before is not None:
            self.by_rack[before.rack_ref].discard(uid)
            if not self.by_rack[before.rack_ref]:
                del self.by_rack[before.rack_ref]
        if new is not None and (rec := record_of(new)) is not None:
            self.records[uid] = rec
            self.by_rack[rec.rack_ref].add(uid)

    def serves(self, namespace: str | None) -> bool:
        return not self.namespaces or namespace in self.namespaces

    def lookup(self, uid: str) -> TaskRecord | None:
        return self.records.get(uid)

    def put(self, obj: Obj) -> TaskRecord | None:
        """Take in a write's response (newer than the watch's copy, or ignored)."""
        if not self.serves(_meta(obj).get("namespace")):
            return None
        self.informer.put(obj)
        return self.records.get(str(_meta(obj).get("uid")))

    def forget(self, uid: str) -> None:
        self.informer.remove(uid)

    async def find(self, uid: str, site_id: str) -> TaskRecord:
        """The task `uid` of site `site_id`; 404 when the cache (after a short wait) has none."""
        self.require_synced()
        rec: TaskRecord | None = await self.informer.wait_until(
            lambda: self.records.get(uid), self.miss_wait
        )
        if rec is None or rec.site_id != site_id.lower():
            raise errors.APIError(404, errors.TASK_NOT_FOUND.format(id=uid))
        return rec

    def of_rack(self, rack: str, site_id: str) -> list[TaskRecord]:
        self.require_synced()
        site = site_id.lower()
        recs = (self.records.get(uid) for uid in self.by_rack.get(rack, ()))
        return [r for r in recs if r is not None and r.site_id == site]


class Caches:
    """The three caches, started and stopped together."""

    def __init__(
        self, api_client: client.ApiClient, namespaces: list[str], miss_wait: float
    ) -> None:
        self.providers = ProviderCache(api_client, miss_wait)
        self.sites = SiteCache(api_client, miss_wait)
        self.tasks = TaskCache(api_client, namespaces, miss_wait)
        self.all: list[_Cache] = [self.providers, self.sites, self.tasks]

    def start(self) -> None:
        for c in self.all:
            c.informer.start()

    async def stop(self) -> None:
        for c in self.all:
            await c.informer.stop()

    @property
    def synced(self) -> bool:
        return all(c.informer.synced.is_set() for c in self.all)

    async def wait_synced(self, seconds: float) -> bool:
        results = [await c.informer.wait_synced(seconds) for c in self.all]
        return all(results)
