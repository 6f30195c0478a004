"""Least privilege: with only deploy/rbac/shim.yaml's ClusterRole, the shim works and
its ServiceAccount can do nothing else."""

from __future__ import annotations

import secrets
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest_asyncio
import yaml
from integration_support import (
    admin_auth,
    create_service_account,
    read_task,
    serve_shim,
    service_account_token,
    token_kubeconfig,
)
from kubernetes_asyncio import client

from nicotask import api
from nicotask.kube import TASKS
from nicotask_dev.devenv.testing import DevEnvHandle
from nicotask_dev.shim.testing import make_task, make_world

RBAC = Path(__file__).resolve().parents[2] / "deploy" / "rbac" / "shim.yaml"


def cluster_role() -> dict[str, Any]:
    docs = [d for d in yaml.safe_load_all(RBAC.read_text()) if d]
    roles = [d for d in docs if d["kind"] == "ClusterRole"]
    assert len(roles) == 1
    assert {d["kind"] for d in docs} <= {"ClusterRole", "ClusterRoleBinding", "ServiceAccount"}
    return roles[0]


def test_rbac_file_grants_only_what_the_shim_needs() -> None:
    rules = cluster_role()["rules"]
    grants = {
        (g, r, v)
        for rule in rules
        for g in rule["apiGroups"]
        for r in rule["resources"]
        for v in rule["verbs"]
    }
    assert grants == {(api.GROUP, TASKS, v) for v in ("get", "list", "watch", "patch")} | {
        (api.GROUP, r, v) for r in (api.PROVIDERS, api.SITES) for v in ("get", "list", "watch")
    }


@pytest_asyncio.fixture(loop_scope="session")
async def sa_token(kube_api: Any, namespace: str, crds: None) -> AsyncIterator[str]:
    rbac = client.RbacAuthorizationV1Api(kube_api)
    name = f"nicotask-shim-{secrets.token_hex(3)}"
    role = cluster_role()
    role["metadata"] = {"name": name}
    await rbac.create_cluster_role(role)  # type: ignore[arg-type]
    await create_service_account(kube_api, namespace, "shim")
    await rbac.create_cluster_role_binding(
        {  # type: ignore[arg-type]
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": name},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": name,
            },
            "subjects": [{"kind": "ServiceAccount", "name": "shim", "namespace": namespace}],
        }
    )
    try:
        yield await service_account_token(kube_api, namespace, "shim")
    finally:
        await rbac.delete_cluster_role_binding(name)
        await rbac.delete_cluster_role(name)


async def test_shim_works_with_least_privilege_and_nothing_more(
    kube_api: Any, namespace: str, devenv: DevEnvHandle, sa_token: str, tmp_path: Path
) -> None:
    world = await make_world(kube_api)
    task = await make_task(kube_api, namespace, world.site_a, "Running")
    uid = task["metadata"]["uid"]
    kubeconfig = token_kubeconfig(devenv.kubeconfig, sa_token, tmp_path / "sa.kubeconfig")
    key_dir = tmp_path / "issuer"
    with serve_shim(kubeconfig, key_dir) as server:
        assert server.shim.caches.synced  # list + watch of providers, sites, tasks allowed
        headers = admin_auth(key_dir, world.acme.name)
        async with httpx.AsyncClient(base_url=server.url, headers=headers) as http:
            base = f"/v2/org/{world.acme.name}/nico"
            r = await http.get(f"{base}/task/{uid}", params={"siteId": world.site_a})
            assert r.status_code == 200, r.text
            r = await http.get(f"{base}/rack/rack-1/task", params={"siteId": world.site_a})
            assert r.status_code == 200, r.text
            r = await http.post(f"{base}/task/{uid}/cancel", json={"siteId": world.site_a})
            assert r.status_code == 202, r.text
            r = await http.get("/readyz")
            assert r.status_code == 200 and r.json()["ready"] is True, r.text
    got = await read_task(kube_api, namespace, task["metadata"]["name"])
    assert got["spec"]["cancel"] is True

    # the ServiceAccount itself: everything else is forbidden
    cfg = kube_api.configuration
    sa = {"Authorization": f"Bearer {sa_token}"}
    tasks = f"/apis/{api.GROUP}/{api.VERSION}/namespaces/{namespace}/{TASKS}"
    name = task["metadata"]["name"]
    verify = ssl.create_default_context(cafile=cfg.ssl_ca_cert)
    async with httpx.AsyncClient(base_url=cfg.host, verify=verify, headers=sa) as k:
        denied = [
            await k.post(
                tasks,
                json=api.TASK_RESOURCE.manifest(
                    "evil", {"siteId": world.site_a, "rackRef": "r", "operation": "PowerOn"}
                ),
            ),
            await k.delete(f"{tasks}/{name}"),
            await k.patch(
                f"{tasks}/{name}/status",
                json={"status": {"status": "Succeeded"}},
                headers={"Content-Type": "application/merge-patch+json"},
            ),
            await k.put(f"{tasks}/{name}", json=got),
            await k.get(f"/api/v1/namespaces/{namespace}/secrets"),
            await k.get(f"/api/v1/namespaces/{namespace}/configmaps"),
            await k.get(f"/apis/{api.GROUP}/{api.VERSION}/namespaces/{namespace}/nicoracks"),
            await k.post(
                f"/apis/{api.GROUP}/{api.VERSION}/nicoproviders",
                json={
                    "apiVersion": api.API_VERSION,
                    "kind": "NicoProvider",
                    "metadata": {"name": "x"},
                    "spec": {"org": "x", "providerId": "00000000-0000-0000-0000-000000000000"},
                },
            ),
            await k.post(
                f"/api/v1/namespaces/{namespace}/events",
                json={
                    "apiVersion": "v1",
                    "kind": "Event",
                    "metadata": {"generateName": "x."},
                    "involvedObject": {"kind": "NicoTask", "name": name, "namespace": namespace},
                },
            ),
        ]
        assert [r.status_code for r in denied] == [403] * len(denied), [r.text for r in denied]

        async def allowed(verb: str, resource: str, sub: str = "", group: str = api.GROUP) -> bool:
            r = await k.post(
                "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
                json={
                    "apiVersion": "authorization.k8s.io/v1",
                    "kind": "SelfSubjectAccessReview",
                    "spec": {
                        "resourceAttributes": {
                            "group": group,
                            "resource": resource,
                            "verb": verb,
                            "namespace": namespace,
                            "subresource": sub,
                        }
                    },
                },
            )
            assert r.status_code == 201, r.text
            return bool(r.json()["status"]["allowed"])

        for verb in ("get", "list", "watch", "patch"):
            assert await allowed(verb, TASKS)
        for verb in ("create", "delete", "update", "deletecollection"):
            assert not await allowed(verb, TASKS)
        assert not await allowed("patch", TASKS, "status")
        assert not await allowed("update", TASKS, "status")
        assert not await allowed("get", "secrets", group="")
        assert not await allowed("get", "configmaps", group="")
        assert not await allowed("patch", api.SITES)
        assert not await allowed("get", api.RULES)
