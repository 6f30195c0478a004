"""schemathesis run of the contract's OpenAPI (contract/openapi.yaml: the cancel
operation) against the real shim: no 5xx, no response that breaks the schema.
Then hypothesis-made bodies the schema never produces (any JSON value, deep
nesting, raw bytes, oversized, odd content types) and odd tokens: always a
NICoAPIError 4xx, never a 5xx."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from integration_support import serve_shim
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from nicotask_dev.devenv.testing import DevEnvHandle
from nicotask_dev.shim.devissuer import issue_token
from nicotask_dev.shim.testing import SAMPLE_REPORT, ServerThread, World, make_task, make_world

CONTRACT = Path(__file__).resolve().parents[2] / "contract" / "openapi.yaml"
CHECKS = [not_a_server_error, response_schema_conformance]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def st_world(kube_api: Any, crds: None) -> World:
    return await make_world(kube_api)


@pytest.fixture(scope="module")
def st_server(
    devenv: DevEnvHandle, st_world: World, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServerThread, Path]]:
    key_dir = tmp_path_factory.mktemp("st-issuer")
    with serve_shim(devenv.kubeconfig, key_dir) as server:
        yield server, key_dir


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
        max_examples=100,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=op.as_strategy(), fix_org=st.booleans())
    def fuzz(case: Any, fix_org: bool) -> None:
        run(case, fix_org)

    fuzz()
    # and the cases random data rarely reaches: real tasks of the right site, every state
    for uid in live_tasks:
        for site in (st_world.site_a, st_world.site_a2, st_world.site_b):
            case = op.Case(
                path_parameters={"org": org, "id": uid},
                body={"siteId": site},
                media_type="application/json",
            )
            run(case, fix_org=False)
    assert not any(code >= 500 for code in statuses), statuses
    assert {202, 400, 403, 404} <= set(statuses), statuses


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5)
    ),
    max_leaves=30,
)


def _nested(depth: int, kind: str) -> bytes:
    if kind == "list":
        return b"[" * depth + b"]" * depth
    return b'{"siteId":' * depth + b'"x"' + b"}" * depth


def test_raw_bodies_and_tokens_never_5xx(
    st_server: tuple[ServerThread, Path], st_world: World, live_tasks: list[str]
) -> None:
    server, key_dir = st_server
    org = st_world.acme.name
    token = issue_token(key_dir, org, ["PROVIDER_ADMIN"])
    url = f"{server.url}/v2/org/{org}/nico/task/{live_tasks[1]}/cancel"
    statuses: dict[int, int] = {}

    def post(body: bytes, content_type: str = "application/json", auth: str | None = None) -> None:
        r = httpx.post(
            url,
            content=body,
            timeout=30,
            headers={"Content-Type": content_type, "Authorization": auth or f"Bearer {token}"},
        )
        statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
        assert r.status_code < 500, (body[:80], r.status_code, r.text)
        assert 400 <= r.status_code < 500, (body[:80], r.status_code, r.text)
        assert set(r.json()) == {"source", "message", "data"}, r.text

    @settings(
        max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    @given(
        value=JSON,
        raw=st.binary(max_size=300),
        ctype=st.sampled_from(
            ["application/json", "text/plain", "application/x-www-form-urlencoded", ""]
        ),
    )
    def fuzz(value: Any, raw: bytes, ctype: str) -> None:
        if isinstance(value, dict):
            value.pop("siteId", None)  # a valid siteId would cancel the task: 202
        post(json.dumps(value).encode(), ctype)
        post(raw, ctype)

    fuzz()
    for depth in (10, 1000, 1025, 5000, 20000):
        post(_nested(depth, "list"))
        post(_nested(depth, "dict"))
    post(b"x" * (64 * 1024 + 1))  # over the cap: 413
    post(b'{"siteId": "' + b"9" * (1 << 20) + b'"}')
    for auth in (
        "Bearer " + "a." * 9000,
        "Bearer e30.e30.",
        "Bearer ..",
        "Basic Zm9vOmJhcg==",
        "Bearer eyJhbGciOiJSUzI1NiJ9." + "W" * 30000 + ".c2ln",
    ):
        post(b'{"siteId": "' + st_world.site_a.encode() + b'"}', auth=auth)
    assert {400, 401, 413} <= set(statuses), statuses
