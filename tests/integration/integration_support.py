"""Helpers shared by the integration tests: objects on the real API server, ServiceAccount
identities, and the shim served in-process.

Everything goes through the one Kubernetes adapter (nicotask.kube); a helper takes a
`Kube` or a bare ApiClient (the `kube_api` fixture).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from kubernetes_asyncio import client

from nicotask import api
from nicotask.kube import Kube
from nicotask.shim.app import create_app
from nicotask_dev.shim.devissuer import issue_token
from nicotask_dev.shim.testing import ServerThread, dev_issuer_settings, wait_for

SITE = "660e8400-e29b-41d4-a716-446655440000"


def as_kube(kube: Kube | Any) -> Kube:
    return kube if isinstance(kube, Kube) else Kube(kube)


# ---- objects ---------------------------------------------------------------------------


async def create_task(
    kube: Kube | Any,
    namespace: str,
    name: str,
    rack: str = "rack-1",
    operation: str = "PowerOn",
    metadata: dict[str, Any] | None = None,
    **spec: Any,
) -> api.NicoTask:
    """A NicoTask of SITE on `rack` (extra `spec` fields by their wire names)."""
    body = api.TASK_RESOURCE.manifest(
        name, {"siteId": SITE, "rackRef": rack, "operation": operation, **spec}, **(metadata or {})
    )
    return api.NicoTask.model_validate(await as_kube(kube).create(api.TASKS, body, namespace))


def component(
    component_id: str,
    endpoint: str,
    system_id: str,
    type_: str = "Compute",
    secret: str | None = None,
) -> dict[str, Any]:
    """One rack component reached over Redfish (with its own credentials when `secret`)."""
    redfish: dict[str, Any] = {"endpoint": endpoint, "systemId": system_id}
    if secret:
        redfish["credentials"] = {"name": secret}
    return {"id": component_id, "type": type_, "redfish": redfish}


async def create_rack(
    kube: Kube | Any,
    namespace: str,
    name: str,
    components: list[dict[str, Any]],
    secret: str = "bmc",
) -> api.NicoRack:
    """A NicoRack of SITE over http:// BMCs (the emulator and the tests' listeners)."""
    body = api.RACK_RESOURCE.manifest(
        name,
        {
            "siteId": SITE,
            "credentials": {"name": secret},
            "tls": {"allowInsecureHttp": True},
            "components": components,
        },
    )
    return api.NicoRack.model_validate(await as_kube(kube).create(api.RACKS, body, namespace))


async def read_task(kube: Kube | Any, namespace: str, name: str) -> dict[str, Any]:
    return await as_kube(kube).get(api.TASKS, name, namespace)


# ---- identities --------------------------------------------------------------------------


async def service_account_token(kube_api: Any, namespace: str, name: str) -> str:
    """A token (TokenRequest API, one hour) of the ServiceAccount `name`."""
    tr = await client.CoreV1Api(kube_api).create_namespaced_service_account_token(
        name,
        namespace,
        client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=3600)
        ),
    )
    return str(tr.status.token)


async def create_service_account(kube_api: Any, namespace: str, name: str) -> None:
    await client.CoreV1Api(kube_api).create_namespaced_service_account(
        namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name=name))
    )


def token_kubeconfig(admin_kubeconfig: Path, token: str, out: Path) -> Path:
    """A kubeconfig for `token` on the cluster of the admin kubeconfig's current context."""
    cfg = yaml.safe_load(admin_kubeconfig.read_text())
    ctx = next(c for c in cfg["contexts"] if c["name"] == cfg["current-context"])["context"]
    cluster = next(c for c in cfg["clusters"] if c["name"] == ctx["cluster"])
    out.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "sa",
        "clusters": [{**cluster, "name": "c"}],
        "users": [{"name": "sa", "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "c", "user": "sa"}}],
    }))  # fmt: skip
    return out


# ---- the shim ------------------------------------------------------------------------------


@contextlib.contextmanager
def serve_shim(kubeconfig: Path | str, key_dir: Path) -> Iterator[ServerThread]:
    """The shim, with the dev issuer's keys in `key_dir`, served on a loopback port."""
    settings = dev_issuer_settings(key_dir)
    server = ServerThread(create_app(settings, kubeconfig=str(kubeconfig))).start()
    try:
        yield server
    finally:
        server.stop()


def bearer(tok: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tok}"}


def admin_auth(key_dir: Path, org: str, sub: str = "alice") -> dict[str, str]:
    """The Authorization header of a PROVIDER_ADMIN of `org`."""
    return bearer(issue_token(key_dir, org, ["PROVIDER_ADMIN"], sub))


async def cached(server: ServerThread, *tasks: dict[str, Any], versions: bool = True) -> None:
    """Wait until the shim's watch-fed cache holds these tasks (at their resourceVersions)."""
    records = server.shim.caches.tasks
    for task in tasks:
        uid, rv = task["metadata"]["uid"], task["metadata"]["resourceVersion"]
        assert await wait_for(
            lambda uid=uid, rv=rv: (
                (r := records.lookup(uid)) is not None
                and (not versions or r.resource_version == rv)
            ),
            10,
        )
