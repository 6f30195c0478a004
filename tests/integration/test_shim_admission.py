"""Who cancelled is not forgeable: the ValidatingAdmissionPolicy on the real API server.

Two real identities (ServiceAccount tokens from the TokenRequest API): a
delegate (standing in for the shim's ServiceAccount) may record any name in
`nico.dev/cancel-requested-by`; another user may record only their own
username, may cancel without the annotation, and may leave someone else's
name untouched. The policy is installed by admission.install_policy, as the
local environment does, and removed afterwards (it is cluster-wide).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest_asyncio
from integration_support import (
    SITE,
    create_service_account,
    create_task,
    read_task,
    service_account_token,
    token_kubeconfig,
)
from kubernetes_asyncio import client

from nicotask import api
from nicotask.kube import (
    CANCEL_REQUESTED_BY,
    MERGE_PATCH,
    TASKS,
    ApiException,
    KubeError,
    new_api_client,
)
from nicotask_dev import admission
from nicotask_dev.devenv.pki import ADMIN_USER
from nicotask_dev.devenv.testing import DevEnvHandle
from nicotask_dev.shim.testing import make_task


async def _service_account(kube_api: Any, namespace: str, name: str) -> str:
    """A ServiceAccount that may get/patch/create NicoTasks in `namespace`; its token."""
    rbac = client.RbacAuthorizationV1Api(kube_api)
    await create_service_account(kube_api, namespace, name)
    await rbac.create_namespaced_role(
        namespace,
        {  # type: ignore[arg-type]
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": name},
            "rules": [
                {
                    "apiGroups": [api.GROUP],
                    "resources": [TASKS],
                    "verbs": ["get", "patch", "create", "update"],
                }
            ],
        },
    )
    await rbac.create_namespaced_role_binding(
        namespace,
        {  # type: ignore[arg-type]
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
        },
    )
    return await service_account_token(kube_api, namespace, name)


async def _client_for(admin_kubeconfig: Path, token: str, out: Path) -> client.ApiClient:
    return await new_api_client(
        str(token_kubeconfig(admin_kubeconfig, token, out)), component="shim"
    )


@pytest_asyncio.fixture(loop_scope="session")
async def policy(devenv: DevEnvHandle, namespace: str, crds: None) -> AsyncIterator[str]:
    """The policy with the dev environment's delegates plus this test's delegate SA."""
    delegate = f"system:serviceaccount:{namespace}:delegate"
    await asyncio.to_thread(
        admission.install_policy,
        devenv.kubeconfig,
        [admission.CHART_SHIM_USER, ADMIN_USER, delegate],
    )
    try:
        yield delegate
    finally:
        await asyncio.to_thread(admission.uninstall_policy, devenv.kubeconfig)


async def _patch(
    custom: client.CustomObjectsApi,
    namespace: str,
    name: str,
    body: dict[str, Any],
    dry_run: bool = False,
) -> int:
    """The HTTP status of a merge patch (200 when accepted)."""
    kwargs: dict[str, Any] = {"dry_run": "All"} if dry_run else {}
    try:
        await custom.patch_namespaced_custom_object(  # type: ignore[call-arg]
            api.GROUP,
            api.VERSION,
            namespace,
            TASKS,
            name,
            body,
            _content_type=MERGE_PATCH,
            **kwargs,
        )
    except ApiException as exc:
        assert "may only be set to your own username" in str(exc.body), exc.body
        return int(exc.status)
    return 200


def _by(name: str, cancel: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {"metadata": {"annotations": {CANCEL_REQUESTED_BY: name}}}
    if cancel:
        body["spec"] = {"cancel": True}
    return body


async def test_only_delegates_record_someone_else(
    devenv: DevEnvHandle,
    kube_api: Any,
    namespace: str,
    policy: str,
    tmp_path: Path,
) -> None:
    user_name = f"system:serviceaccount:{namespace}:someone"
    user_token = await _service_account(kube_api, namespace, "someone")
    delegate_token = await _service_account(kube_api, namespace, "delegate")
    user_api = await _client_for(devenv.kubeconfig, user_token, tmp_path / "user.kubeconfig")
    delegate_api = await _client_for(devenv.kubeconfig, delegate_token, tmp_path / "d.kubeconfig")
    user, delegate = client.CustomObjectsApi(user_api), client.CustomObjectsApi(delegate_api)
    try:
        t1 = (await make_task(kube_api, namespace, SITE, "Running"))["metadata"]["name"]
        t2 = (await make_task(kube_api, namespace, SITE, "Running"))["metadata"]["name"]
        t3 = (await make_task(kube_api, namespace, SITE, "Running"))["metadata"]["name"]
        # the policy reaches the API server's admission a moment after it is created
        for _ in range(100):
            if await _patch(user, namespace, t1, _by("alice", True), dry_run=True) != 200:
                break
            await asyncio.sleep(0.2)
        # another user may not record somebody else, with or without the cancel
        assert await _patch(user, namespace, t1, _by("alice", True)) in (403, 422)
        assert await _patch(user, namespace, t1, _by(policy)) in (403, 422)
        # ... nor at creation
        try:
            await create_task(
                user_api,
                namespace,
                "forged",
                metadata={"annotations": {CANCEL_REQUESTED_BY: "alice"}},
            )
            raise AssertionError("a forged annotation was accepted at creation")
        except (ApiException, KubeError) as exc:
            assert exc.status in (403, 422), exc
        # but may cancel, recording themselves (as kubectl nico cancel does) or nobody
        assert await _patch(user, namespace, t1, _by(user_name, True)) == 200
        assert await _patch(user, namespace, t2, {"spec": {"cancel": True}}) == 200
        # the delegate (the shim) records the verified token's subject
        assert await _patch(delegate, namespace, t3, _by("alice@example.com", True)) == 200
        # someone else's name may stay as it is while other fields change
        assert await _patch(user, namespace, t3, {"metadata": {"labels": {"x": "y"}}}) == 200
        # and may not be replaced by yet another name
        assert await _patch(user, namespace, t3, _by("mallory")) in (403, 422)
        got = await read_task(kube_api, namespace, t3)
        assert got["metadata"]["annotations"][CANCEL_REQUESTED_BY] == "alice@example.com"
        # the admin (the local shim's identity) is a delegate in the local environment
        admin = client.CustomObjectsApi(kube_api)
        assert await _patch(admin, namespace, t2, _by("carol")) == 200
        assert json.dumps(got)  # the object stayed readable
    finally:
        await user_api.close()
        await delegate_api.close()
