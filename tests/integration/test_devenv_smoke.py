"""Each part of the local environment is real: apiserver + RBAC, Temporal, Redfish."""

from __future__ import annotations

import ssl
import time
import uuid
from datetime import timedelta
from typing import Any

from temporalio import activity, workflow
from temporalio.worker import Worker

# The workflow sandbox re-imports this module; let it reuse these as they are.
with workflow.unsafe.imports_passed_through():
    import httpx
    import pytest
    import sushy
    from kubernetes_asyncio import client

    from nicotask_dev.devenv import gobuild
    from nicotask_dev.devenv.testing import DevEnvHandle


async def test_configmap_round_trip(kube_api: Any, namespace: str) -> None:
    core = client.CoreV1Api(kube_api)
    body = client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="smoke"), data={"rack": "r-1", "note": "héllo"}
    )
    await core.create_namespaced_config_map(namespace, body)
    got = await core.read_namespaced_config_map("smoke", namespace)
    assert got.data == {"rack": "r-1", "note": "héllo"}
    assert got.metadata.uid


async def test_version_is_the_pinned_build(kube_api: Any, devenv: DevEnvHandle) -> None:
    if "kube" in devenv.external:
        pytest.skip("using an existing cluster")
    info = await client.VersionApi(kube_api).get_code()
    assert info.git_version == gobuild.KUBERNETES_VERSION


async def test_rbac_denies_a_service_account_without_rights(kube_api: Any, namespace: str) -> None:
    core = client.CoreV1Api(kube_api)
    await core.create_namespaced_service_account(
        namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="nobody"))
    )
    token_request = await core.create_namespaced_service_account_token(
        "nobody",
        namespace,
        client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=600)
        ),
    )
    token = token_request.status.token
    cfg = kube_api.configuration
    headers = {"Authorization": f"Bearer {token}"}
    tls = ssl.create_default_context(cafile=cfg.ssl_ca_cert)
    async with httpx.AsyncClient(base_url=cfg.host, verify=tls, headers=headers) as http:
        # the token authenticates as the ServiceAccount ...
        review = await http.post(
            "/apis/authentication.k8s.io/v1/selfsubjectreviews",
            json={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
        )
        assert review.status_code == 201, review.text
        user = review.json()["status"]["userInfo"]["username"]
        assert user == f"system:serviceaccount:{namespace}:nobody"
        # ... which RBAC gives no rights
        denied = await http.get(f"/api/v1/namespaces/{namespace}/configmaps")
        assert denied.status_code == 403, denied.text
        assert denied.json()["reason"] == "Forbidden"
        # and a forged token is not even authenticated
        forged = await http.get(
            f"/api/v1/namespaces/{namespace}/configmaps",
            headers={"Authorization": "Bearer not-a-token"},
        )
        assert forged.status_code == 401


@activity.defn
async def shout(text: str) -> str:
    return text.upper() + "!"


@workflow.defn
class ShoutWorkflow:
    @workflow.run
    async def run(self, text: str) -> str:
        return await workflow.execute_activity(
            shout, text, start_to_close_timeout=timedelta(seconds=10)
        )


async def test_trivial_temporal_workflow(temporal_client: Any) -> None:
    queue = f"smoke-{uuid.uuid4().hex[:8]}"
    async with Worker(
        temporal_client, task_queue=queue, workflows=[ShoutWorkflow], activities=[shout]
    ):
        result = await temporal_client.execute_workflow(
            ShoutWorkflow.run,
            "rack ready",
            id=f"smoke-{uuid.uuid4()}",
            task_queue=queue,
            execution_timeout=timedelta(seconds=30),
        )
    assert result == "RACK READY!"


def test_power_on_through_redfish(devenv: DevEnvHandle) -> None:
    bmc = sushy.Sushy(
        devenv.redfish_url + "/redfish/v1/",
        username=devenv.redfish_user,
        password=devenv.redfish_password,
    )
    systems = [bmc.get_system(s["path"]) for s in devenv.redfish_systems]
    assert {s.name for s in systems} == {s["name"] for s in devenv.redfish_systems}
    # a reused environment may have powered some on already: prefer one that is off
    system = next((s for s in systems if s.power_state == sushy.PowerState.OFF), systems[0])
    if system.power_state != sushy.PowerState.OFF:
        system.reset_system(sushy.ResetType.FORCE_OFF)
        _wait_power(system, sushy.PowerState.OFF)
    system.reset_system(sushy.ResetType.ON)
    _wait_power(system, sushy.PowerState.ON)


def _wait_power(system: Any, want: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        system.refresh()
        if system.power_state == want:
            return
        assert time.monotonic() < deadline, f"power state still {system.power_state}"
        time.sleep(0.5)


def test_wrong_redfish_password_is_refused(devenv: DevEnvHandle) -> None:
    bmc = sushy.Sushy(
        devenv.redfish_url + "/redfish/v1/",
        username=devenv.redfish_user,
        password="wrong",
    )
    with pytest.raises(sushy.exceptions.AccessError):
        bmc.get_system(devenv.redfish_systems[0]["path"])
