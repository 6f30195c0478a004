"""JWKS rotation and a broken JWKS, through the shim's HTTP server on the dev environment.

The shim (real app, uvicorn, the real API server behind its caches) trusts an
issuer whose keys come from a real JWKS server on loopback. A request that
passes authentication reaches the task lookup and answers 404 for an unknown
task; one that does not answers 401 (or 503 when the keys cannot be had), in
the contract's NICoAPIError shape, never 500.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import pytest_asyncio

from nicotask.shim import errors
from nicotask.shim.app import create_app
from nicotask.shim.config import IssuerConfig, ShimSettings
from nicotask_dev.shim.jwks_testing import JwksServer, ec_key, jwk, rsa_key, signed_token
from nicotask_dev.shim.testing import ServerThread, World

pytestmark = pytest.mark.asyncio(loop_scope="session")

LIFESPAN = 1.0  # NICOTASK_SHIM_JWKS_CACHE_SECONDS of this shim
OLD_KEY, NEW_KEY, STRANGER = rsa_key(), ec_key(), ec_key()


@pytest_asyncio.fixture(loop_scope="session")
async def jwks() -> AsyncIterator[JwksServer]:
    async with JwksServer() as server:
        yield server


@pytest.fixture
def shim(devenv: Any, world: World, jwks: JwksServer) -> Iterator[ServerThread]:
    settings = ShimSettings(
        issuers=[IssuerConfig(issuer="kc", audience="nicotask", jwks_url=jwks.url)],
        jwks_cache_seconds=LIFESPAN,
        jwks_min_refetch_seconds=0.0,
        jwks_timeout_seconds=1.0,
    )
    server = ServerThread(create_app(settings, kubeconfig=str(devenv.kubeconfig))).start()
    try:
        yield server
    finally:
        server.stop()


async def test_rotation_and_broken_jwks_through_the_shim(
    shim: ServerThread, jwks: JwksServer, world: World
) -> None:
    org = world.acme.name
    path = f"/v2/org/{org}/nico/task/{uuid.uuid4()}"

    async def answer(token: str) -> tuple[int, dict[str, Any]]:
        async with httpx.AsyncClient(base_url=shim.url, timeout=10) as http:
            resp = await http.get(
                path,
                params={"siteId": world.site_a},
                headers={"Authorization": f"Bearer {token}"},
            )
        return resp.status_code, resp.json()

    def token(key: Any, kid: str) -> str:
        return signed_token(key, kid, roles=(f"{org}:PROVIDER_ADMIN",))

    def refused(status: int, message: str, got: tuple[int, dict[str, Any]]) -> None:
        assert got[0] == status, got
        assert got[1]["source"] == "nico" and got[1]["message"] == message, got

    # The issuer's key k1 verifies: the request gets as far as the (missing) task.
    jwks.body = {"keys": [jwk(OLD_KEY, "k1")]}
    old = token(OLD_KEY, "k1")
    assert (await answer(old))[0] == 404

    # Rotation: k1 removed, k2 added. A token of k2 (unknown kid) refetches at once.
    jwks.body = {"keys": [jwk(NEW_KEY, "k2")]}
    new = token(NEW_KEY, "k2")
    assert (await answer(new))[0] == 404
    # Within the lifespan k1's token is gone from the caches too: 401, never again 404.
    await asyncio.sleep(LIFESPAN + 0.2)
    refused(401, errors.TOKEN_INVALID, await answer(old))
    refused(401, errors.TOKEN_INVALID, await answer(token(OLD_KEY, "k1")))
    assert (await answer(new))[0] == 404

    # A key nobody published: 401.
    refused(401, errors.TOKEN_INVALID, await answer(token(STRANGER, "k9")))

    # The JWKS breaks: not JSON. Once the keys expire, a token needing them is 503.
    jwks.body = b"{not json"
    await asyncio.sleep(LIFESPAN + 0.2)
    refused(503, errors.KEYS_UNAVAILABLE, await answer(token(NEW_KEY, "k2")))

    # An empty JWKS: there is no key to verify with, 401.
    jwks.body = {"keys": []}
    await asyncio.sleep(LIFESPAN + 0.2)
    refused(401, errors.TOKEN_INVALID, await answer(token(NEW_KEY, "k2")))

    # A JWKS that answers (good keys) only after 5 s, past the fetch timeout (1 s): 503.
    # Without the timeout the fetch would have waited and the answer been 404.
    jwks.body = {"keys": [jwk(NEW_KEY, "k2")]}
    jwks.delay = 5.0
    await asyncio.sleep(LIFESPAN + 0.2)
    refused(503, errors.KEYS_UNAVAILABLE, await answer(token(NEW_KEY, "k2")))
    jwks.delay = 0.0
