"""schemathesis run of the contract's OpenAPI (contract/openapi.yaml: the cancel
operation) against the real shim: no 5xx, no response that breaks the schema."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from nicotask.crdgen import install_crds
from nicotask.devenv.testing import DevEnvHandle
from nicotask.shim.app import create_app
from nicotask.shim.config import ShimSettings
from nicotask.shim.devissuer import issue_token
from nicotask.shim.testing import SAMPLE_REPORT, ServerThread, World, make_task, make_world

CONTRACT = Path(__file__).resolve().parents[2] / "contract" / "openapi.yaml"
CHECKS = [not_a_server_error, response_schema_conformance]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def st_world(devenv: DevEnvHandle, kube_api: Any) -> World:
    await asyncio.to_thread(install_crds, devenv.kubeconfig)
    return await make_world(kube_api)


@pytest.fixture(scope="module")
def st_server(
    devenv: DevEnvHandle, st_world: World, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServerThread, Path]]:
    key_dir = tmp_path_factory.mktemp("st-issuer")
    server = ServerThread(
        create_app(ShimSettings(dev_issuer_dir=key_dir), kubeconfig=str(devenv.kubeconfig))
    ).start()
    try:
        yield server, key_dir
    finally:
        server.stop()


@pytest_asyncio.fixture(loop_scope="session")
async def live_tasks(kube_api: Any, namespace: str, st_world: World) -> list[str]:
    out = []
    for status in ("Pending", "Running", "Terminated", "Succeeded", "Failed"):
        task = await make_task(kube_api, namespace, st_world.site_a, status, report=SAMPLE_REPORT)
        out.append(task["metadata"]["uid"])
    return out


def test_contract_schema_fuzz(
    st_server: tuple[ServerThread, Path], st_world: World, live_tasks: list[str]
) -> None:
    server, key_dir = st_server
    org = st_world.acme.name
    headers = {"Authorization": f"Bearer {issue_token(key_dir, org, ['PROVIDER_ADMIN'])}"}
    schema = schemathesis.openapi.from_path(CONTRACT)
    operations = [r.ok() for r in schema.get_all_operations()]  # type: ignore[union-attr]
    assert [op.path for op in operations] == ["/v2/org/{org}/nico/task/{id}/cancel"]
    op = operations[0]
    statuses: dict[int, int] = {}

    def run(case: Any, fix_org: bool) -> None:
        if fix_org:
            case.path_parameters = {**case.path_parameters, "org": org}
        response = case.call(base_url=server.url, headers=headers)
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        case.validate_response(response, checks=CHECKS)

    @settings(
        max_examples=50, deadline=None, database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=op.as_strategy(), fix_org=st.booleans())
    def fuzz(case: Any, fix_org: bool) -> None:
        run(case, fix_org)

    fuzz()
    # and the cases random data rarely reaches: real tasks of the right site, every state
    for uid in live_tasks:
        for site in (st_world.site_a, st_world.site_a2, st_world.site_b):
            case = op.Case(path_parameters={"org": org, "id": uid}, body={"siteId": site},
                           media_type="application/json")
            run(case, fix_org=False)
    assert not any(code >= 500 for code in statuses), statuses
    assert {202, 400, 403, 404} <= set(statuses), statuses
