"""Helpers for tests and benchmarks: serve the app on a loopback port, seed orgs, make tasks.

    server = ServerThread(create_app(settings, kubeconfig=...)); server.start(); ...; server.stop()

The server runs uvicorn in a thread with its own event loop (lifespan on),
so synchronous clients (schemathesis, requests) and async tests can share it.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
import uvloop
from fastapi import FastAPI
from kubernetes_asyncio import client

from nicotask import api
from nicotask.kube import PROVIDERS, SITES, TASKS
from nicotask.shim.config import ShimSettings

from .devissuer import write_issuers_file


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def dev_issuer_settings(key_dir: Path, **settings: Any) -> ShimSettings:
    """Shim settings that trust the dev token issuer of `key_dir` the way `make run`
    does: NICOTASK_SHIM_ISSUERS_FILE is the issuer's dev-issuers.json."""
    return ShimSettings(issuers_file=write_issuers_file(key_dir), **settings)


class ServerThread:
    """uvicorn serving `app` on 127.0.0.1:<free port> in a background thread."""

    def __init__(self, app: FastAPI, port: int | None = None) -> None:
        self.app = app
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="on",
            timeout_graceful_shutdown=5,
        )
        self.server = uvicorn.Server(config)
        # the server loop, for run_coroutine_threadsafe from tests
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread = threading.Thread(target=self._run, name="shim-server", daemon=True)

    def _run(self) -> None:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(self._serve())

    async def _serve(self) -> None:
        self.loop = asyncio.get_running_loop()
        await self.server.serve()

    def start(self, timeout: float = 30.0) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError("shim server thread exited during startup")
            if time.monotonic() > deadline:
                raise TimeoutError("shim server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)

    @property
    def shim(self) -> Any:
        return self.app.state.shim


@dataclass
class Org:
    name: str
    provider: str | None  # NicoProvider name
    sites: list[str]  # siteIds


@dataclass
class World:
    """Orgs with providers and sites, named uniquely for one test session."""

    acme: Org  # provider, two sites
    beta: Org  # provider, one site
    lonely: Org  # no provider

    @property
    def site_a(self) -> str:
        return self.acme.sites[0]

    @property
    def site_a2(self) -> str:
        return self.acme.sites[1]

    @property
    def site_b(self) -> str:
        return self.beta.sites[0]


async def create_provider(custom: client.CustomObjectsApi, name: str, org: str) -> None:
    await custom.create_cluster_custom_object(
        api.GROUP,
        api.VERSION,
        PROVIDERS,
        {
            "apiVersion": api.API_VERSION,
            "kind": "NicoProvider",
            "metadata": {"name": name},
            "spec": {"org": org, "providerId": str(uuid.uuid4())},
        },
    )


async def create_site(
    custom: client.CustomObjectsApi, site_id: str, provider: str, name: str | None = None
) -> None:
    """A NicoSite, named after its siteId unless `name` says otherwise (which the CRD refuses)."""
    await custom.create_cluster_custom_object(
        api.GROUP,
        api.VERSION,
        SITES,
        {
            "apiVersion": api.API_VERSION,
            "kind": "NicoSite",
            "metadata": {"name": site_id.lower() if name is None else name},
            "spec": {"siteId": site_id, "providerRef": provider},
        },
    )


async def make_world(api_client: client.ApiClient) -> World:
    custom = client.CustomObjectsApi(api_client)
    s = secrets.token_hex(3)
    acme = Org(f"acme-{s}", f"prov-acme-{s}", [str(uuid.uuid4()), str(uuid.uuid4())])
    beta = Org(f"beta-{s}", f"prov-beta-{s}", [str(uuid.uuid4())])
    lonely = Org(f"lonely-{s}", None, [])
    for org in (acme, beta):
        assert org.provider
        await create_provider(custom, org.provider, org.name)
        for site in org.sites:
            await create_site(custom, site, org.provider)
    return World(acme, beta, lonely)


SAMPLE_REPORT = {
    "version": "1",
    "stages": [
        {
            "number": 1,
            "status": "completed",
            "steps": [{"componentType": "PowerShelf", "status": "completed", "totalComponents": 2}],
        },
        {
            "number": 2,
            "status": "running",
            "steps": [{"componentType": "Compute", "status": "running", "totalComponents": 4}],
        },
    ],
}


async def make_task(
    api_client: client.ApiClient,
    namespace: str,
    site_id: str,
    status: str | None = "Running",
    *,
    rack: str = "rack-1",
    report: dict[str, Any] | None = None,
    name: str | None = None,
) -> dict[str, Any]:
    """Create a NicoTask and (optionally) write its status through the status subresource."""
    custom = client.CustomObjectsApi(api_client)
    obj = await custom.create_namespaced_custom_object(
        api.GROUP,
        api.VERSION,
        namespace,
        TASKS,
        {
            "apiVersion": api.API_VERSION,
            "kind": "NicoTask",
            "metadata": {"name": name or f"task-{secrets.token_hex(4)}"},
            "spec": {
                "siteId": site_id,
                "rackRef": rack,
                "operation": "PowerOn",
                "description": "Power on rack components",
            },
        },
    )
    if status is None:
        return dict(obj)
    now = api.utcnow().isoformat().replace("+00:00", "Z")
    st: dict[str, Any] = {
        "id": obj["metadata"]["uid"],
        "status": status,
        "message": status,
        "created": now,
        "updated": now,
    }
    if status != "Pending" and status != "Waiting":
        st["started"] = now
    if status in api.FINISHED_STATUS_VALUES:
        st["finished"] = now
    if report is not None:
        st["report"] = report
    obj["status"] = st
    out = await custom.replace_namespaced_custom_object_status(
        api.GROUP, api.VERSION, namespace, TASKS, obj["metadata"]["name"], obj
    )
    return dict(out)


async def wait_for(predicate: Any, seconds: float = 10.0, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(interval)
    return bool(predicate())
