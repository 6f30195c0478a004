"""Reading an Argo CD Application as a user would (`kubectl get application -o yaml`),
and a timeline of what it reported, for the GitOps tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kubernetes_asyncio import client

from nicotask_dev.devenv.argocd import NAMESPACE

GROUP, VERSION, PLURAL = "argoproj.io", "v1alpha1", "applications"


def resource(app: dict[str, Any], kind: str, name: str) -> dict[str, Any]:
    """One entry of status.resources (sync status, and health with the Lua's message)."""
    for res in (app.get("status") or {}).get("resources") or []:
        if res.get("kind") == kind and res.get("name") == name:
            return dict(res)
    return {}


def summary(app: dict[str, Any], task: str | None = None) -> str:
    """What `argocd app get` shows first: sync and health, the last operation, and the
    task's own health line."""
    st = app.get("status") or {}
    op = st.get("operationState") or {}
    parts = [
        f"sync={(st.get('sync') or {}).get('status')}",
        f"health={(st.get('health') or {}).get('status')}",
        f"operation={op.get('phase')}: {op.get('message', '')}".rstrip(": "),
    ]
    for cond in st.get("conditions") or []:
        parts.append(f"condition {cond.get('type')}: {cond.get('message', '')}")
    if task:
        h = resource(app, "NicoTask", task).get("health") or {}
        parts.append(f"task {task}: {h.get('status')} {h.get('message', '')}".rstrip())
    return "; ".join(parts)


@dataclass
class Application:
    """One Application in the argocd namespace, on the admin client."""

    api: client.ApiClient
    name: str
    timeline: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    @property
    def custom(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.api)

    async def create(self, body: dict[str, Any]) -> None:
        await self.custom.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, body)

    async def delete(self) -> None:
        await self.custom.delete_namespaced_custom_object(
            GROUP, VERSION, NAMESPACE, PLURAL, self.name
        )

    async def get(self) -> dict[str, Any]:
        obj = await self.custom.get_namespaced_custom_object(
            GROUP, VERSION, NAMESPACE, PLURAL, self.name
        )
        return dict(obj)

    async def hard_refresh(self) -> None:
        """What a Git webhook (or `argocd app get --hard-refresh`) does: re-read Git now."""
        await self.custom.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            NAMESPACE,
            PLURAL,
            self.name,
            {"metadata": {"annotations": {"argocd.argoproj.io/refresh": "hard"}}},
            _content_type="application/merge-patch+json",
        )

    def note(self, line: str) -> None:
        entry = f"{time.monotonic() - self.started:7.1f}s {line}"
        self.timeline.append(entry)
        print(f"[argocd] {entry}", flush=True)

    async def wait(
        self,
        predicate: Callable[[dict[str, Any]], bool],
        what: str,
        task: str | None = None,
        timeout: float = 90.0,
    ) -> dict[str, Any]:
        """Poll until `predicate(app)`; every change of the summary goes to the timeline."""
        deadline = time.monotonic() + timeout
        last = ""
        app: dict[str, Any] = {}
        while time.monotonic() < deadline:
            app = await self.get()
            now = summary(app, task)
            if now != last:
                self.note(now)
                last = now
            if predicate(app):
                return app
            await asyncio.sleep(0.25)
        raise AssertionError(f"application {self.name}: no {what} within {timeout}s; last: {last}")


def synced_at(revision: str) -> Callable[[dict[str, Any]], bool]:
    def check(app: dict[str, Any]) -> bool:
        st = app.get("status") or {}
        op = st.get("operationState") or {}
        sync_rev = ((op.get("syncResult") or {}).get("revision")) or ""
        return bool(
            sync_rev == revision
            and op.get("phase") == "Succeeded"
            and (st.get("sync") or {}).get("status") == "Synced"
        )

    return check


def task_health(name: str, *statuses: str) -> Callable[[dict[str, Any]], bool]:
    def check(app: dict[str, Any]) -> bool:
        return (resource(app, "NicoTask", name).get("health") or {}).get("status") in statuses

    return check


def app_health(*statuses: str) -> Callable[[dict[str, Any]], bool]:
    def check(app: dict[str, Any]) -> bool:
        return ((app.get("status") or {}).get("health") or {}).get("status") in statuses

    return check
