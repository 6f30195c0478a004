"""Reading Flux's GitRepository and Kustomization as a user would (`flux get
kustomizations`, `kubectl get kustomization -o yaml`), and a timeline of what they
reported, for the Flux GitOps test."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kubernetes_asyncio import client

from nicotask_dev.devenv.flux import NAMESPACE

SOURCE = ("source.toolkit.fluxcd.io", "v1", "gitrepositories")
KUSTOMIZE = ("kustomize.toolkit.fluxcd.io", "v1", "kustomizations")
REQUESTED_AT = "reconcile.fluxcd.io/requestedAt"


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_:
            return dict(cond)
    return {}


def summary(ks: dict[str, Any]) -> str:
    """What `flux get kustomization` shows (Ready, its reason and message, the applied
    revision) plus the Reconciling and Healthy conditions."""
    st = ks.get("status") or {}
    parts = [
        f"attempted={(st.get('lastAttemptedRevision') or '')[-40:][:8]}",
        f"applied={(st.get('lastAppliedRevision') or '')[-40:][:8]}",
    ]
    for type_ in ("Ready", "Reconciling", "Healthy"):
        c = condition(ks, type_)
        if c:
            parts.append(f"{type_}={c.get('status')} {c.get('reason')}: {c.get('message', '')}")
    return "; ".join(parts)


def ready(status: str, reason: str | None = None) -> Callable[[dict[str, Any]], bool]:
    def check(ks: dict[str, Any]) -> bool:
        c = condition(ks, "Ready")
        return c.get("status") == status and (reason is None or c.get("reason") == reason)

    return check


def applied(revision: str) -> Callable[[dict[str, Any]], bool]:
    """The Kustomization applied this commit (`main@sha1:<revision>`) and its health
    checks passed: Flux sets lastAppliedRevision only then."""

    def check(ks: dict[str, Any]) -> bool:
        return str((ks.get("status") or {}).get("lastAppliedRevision", "")).endswith(revision)

    return check


def attempted(revision: str) -> Callable[[dict[str, Any]], bool]:
    """The Kustomization started on this commit (applied or failed, health unknown)."""

    def check(ks: dict[str, Any]) -> bool:
        return str((ks.get("status") or {}).get("lastAttemptedRevision", "")).endswith(revision)

    return check


def inventory(ks: dict[str, Any]) -> list[str]:
    """The ids of what the Kustomization applied (`<ns>_<name>_<group>_<kind>`)."""
    entries = ((ks.get("status") or {}).get("inventory") or {}).get("entries") or []
    return [e["id"] for e in entries]


@dataclass
class Flux:
    """One GitRepository and one Kustomization of the same name in flux-system."""

    api: client.ApiClient
    name: str
    timeline: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    @property
    def custom(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.api)

    async def create(self, source: dict[str, Any], ks: dict[str, Any]) -> None:
        await self.custom.create_namespaced_custom_object(*SOURCE[:2], NAMESPACE, SOURCE[2], source)
        await self.custom.create_namespaced_custom_object(
            *KUSTOMIZE[:2], NAMESPACE, KUSTOMIZE[2], ks
        )

    async def delete(self) -> None:
        """The Kustomization (pruning what it applied, as Flux does), then the source."""
        for group, version, plural in (KUSTOMIZE, SOURCE):
            await self.custom.delete_namespaced_custom_object(
                group, version, NAMESPACE, plural, self.name
            )

    async def kustomization(self) -> dict[str, Any]:
        obj = await self.custom.get_namespaced_custom_object(
            *KUSTOMIZE[:2], NAMESPACE, KUSTOMIZE[2], self.name
        )
        return dict(obj)

    async def request_reconcile(self) -> None:
        """What a webhook receiver (or `flux reconcile kustomization --with-source`) does:
        the requestedAt annotation on the source and the Kustomization."""
        now = dt.datetime.now(dt.UTC).isoformat()
        patch = {"metadata": {"annotations": {REQUESTED_AT: now}}}
        for group, version, plural in (SOURCE, KUSTOMIZE):
            await self.custom.patch_namespaced_custom_object(
                group,
                version,
                NAMESPACE,
                plural,
                self.name,
                patch,
                _content_type="application/merge-patch+json",
            )

    def note(self, line: str) -> None:
        entry = f"{time.monotonic() - self.started:7.1f}s {line}"
        self.timeline.append(entry)
        print(f"[flux] {entry}", flush=True)

    async def wait(
        self,
        predicate: Callable[[dict[str, Any]], bool],
        what: str,
        timeout: float = 90.0,
        task: Callable[[], Any] | None = None,
    ) -> dict[str, Any]:
        """Poll the Kustomization until `predicate(ks)`; every change of its summary (and
        of `task()`, e.g. the task's status) goes to the timeline."""
        deadline = time.monotonic() + timeout
        last = ""
        ks: dict[str, Any] = {}
        while time.monotonic() < deadline:
            ks = await self.kustomization()
            now = summary(ks)
            if task is not None:
                now += f"; task: {await task()}"
            if now != last:
                self.note(now)
                last = now
            if predicate(ks):
                return ks
            await asyncio.sleep(0.25)
        raise AssertionError(
            f"kustomization {self.name}: no {what} within {timeout}s; last: {last}"
        )
