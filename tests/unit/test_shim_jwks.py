"""JWKS issuers against a real local JWKS HTTP server (aiohttp on loopback).

Rotation (a removed key stops verifying within the cache lifespan), one
single-flight refetch per unknown kid (rate limited), and a broken JWKS
(empty, malformed, unreachable, slow) answering 401/503, never 500, without
blocking requests that need no JWKS fetch.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import jwt
import pytest
import pytest_asyncio
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from nicotask.shim import errors
from nicotask.shim.auth import JwksSettings, Verifier
from nicotask.shim.config import IssuerConfig
from nicotask_dev.shim.testing import free_port

KEY1 = rsa.generate_private_key(public_exponent=65537, key_size=2048)
KEY2 = ec.generate_private_key(ec.SECP256R1())
PEM_KEY = ec.generate_private_key(ec.SECP256R1())


def _jwk(key: Any, kid: str) -> dict[str, Any]:
    if isinstance(key, rsa.RSAPrivateKey):
        raw = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    else:
        raw = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    return {**raw, "kid": kid, "use": "sig"}


def _token(key: Any, kid: str | None, iss: str = "kc", ttl: int = 600) -> str:
    alg = "RS256" if isinstance(key, rsa.RSAPrivateKey) else "ES256"
    now = int(time.time())
    claims = {"iss": iss, "aud": "nicotask", "sub": f"u-{time.monotonic_ns()}", "exp": now + ttl,
              "realm_access": {"roles": ["acme:PROVIDER_ADMIN"]}}
    return jwt.encode(claims, key, algorithm=alg, headers={"kid": kid} if kid else None)


class JwksServer:
    """Serves `body` (a dict, or raw bytes) at /jwks; counts requests; optional delay."""

    def __init__(self) -> None:
        self.body: Any = {"keys": []}
        self.delay = 0.0
        self.requests = 0
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/jwks"
        self.runner: web.AppRunner | None = None

    async def handle(self, _: web.Request) -> web.Response:
        self.requests += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if isinstance(self.body, bytes):
            return web.Response(body=self.body, content_type="application/json")
        return web.json_response(self.body)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/jwks", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self.runner:
            await self.runner.cleanup()


@pytest_asyncio.fixture(loop_scope="function")
async def server() -> AsyncIterator[JwksServer]:
    s = JwksServer()
    await s.start()
    try:
        yield s
    finally:
        await s.stop()


def _verifier(url: str, **jwks: float) -> Verifier:
    pem = PEM_KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    return Verifier(
        [
            IssuerConfig(issuer="kc", audience="nicotask", jwks_url=url),
            IssuerConfig(issuer="pem", audience="nicotask", public_key_pem=pem),
        ],
        jwks=JwksSettings(**jwks),
    )


async def _status(v: Verifier, token: str) -> int:
    try:
        await v.verify(token)
    except errors.APIError as exc:
        return exc.status
    return 200


@pytest.mark.asyncio(loop_scope="function")
async def test_removed_key_stops_verifying_within_lifespan(server: JwksServer) -> None:
    server.body = {"keys": [_jwk(KEY1, "k1")]}
    v = _verifier(server.url, lifespan=0.5, min_interval=0.0)
    try:
        old = _token(KEY1, "k1")
        assert await _status(v, old) == 200
        assert await _status(v, old) == 200  # cached
        server.body = {"keys": [_jwk(KEY2, "k2")]}  # rotation: k1 removed, k2 added
        new = _token(KEY2, "k2")
        assert await _status(v, new) == 200  # unknown kid: refetched at once
        await asyncio.sleep(0.6)
        assert await _status(v, old) == 401  # the token cache and the key set both expired
        assert await _status(v, _token(KEY1, "k1")) == 401
        assert await _status(v, new) == 200
    finally:
        await v.aclose()


@pytest.mark.asyncio(loop_scope="function")
async def test_unknown_kid_is_one_single_flight_refetch(server: JwksServer) -> None:
    server.body = {"keys": [_jwk(KEY1, "k1")]}
    server.delay = 0.2
    v = _verifier(server.url, lifespan=300, min_interval=1.0)
    try:
        assert await _status(v, _token(KEY1, "k1")) == 200
        assert server.requests == 1
        await asyncio.sleep(1.1)  # past the minimum interval after the first fetch
        stranger = ec.generate_private_key(ec.SECP256R1())
        codes = await asyncio.gather(*(_status(v, _token(stranger, "nope")) for _ in range(50)))
        assert set(codes) == {401}
        assert server.requests == 2  # fifty unknown kids: one refetch, shared
        codes = await asyncio.gather(*(_status(v, _token(stranger, "nope2")) for _ in range(5)))
        assert set(codes) == {401}
        assert server.requests == 2  # within min_interval: no further fetch
    finally:
        await v.aclose()


@pytest.mark.asyncio(loop_scope="function")
@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"keys": []}, 401),  # well-formed, no keys: nothing verifies
        ({"keys": [{"kty": "RSA", "n": "x"}]}, 401),  # unusable key ignored
        ({"keys": 5}, 503),
        (b"not json", 503),
        (b"[1, 2]", 503),
        (b"[" * 100000, 503),
    ],
)
async def test_broken_jwks_is_401_or_503(server: JwksServer, body: Any, status: int) -> None:
    server.body = body
    v = _verifier(server.url, lifespan=300, min_interval=0.0)
    try:
        assert await _status(v, _token(KEY1, "k1")) == status
    finally:
        await v.aclose()


@pytest.mark.asyncio(loop_scope="function")
async def test_unreachable_and_slow_jwks_are_503_and_block_nobody_else(
    server: JwksServer,
) -> None:
    dead = _verifier(f"http://127.0.0.1:{free_port()}/jwks", timeout=1.0)
    try:
        assert await _status(dead, _token(KEY1, "k1")) == 503
    finally:
        await dead.aclose()
    server.body = {"keys": [_jwk(KEY1, "k1")]}
    server.delay = 3.0
    v = _verifier(server.url, timeout=1.0, min_interval=0.0)
    try:
        slow = asyncio.create_task(_status(v, _token(KEY1, "k1")))
        await asyncio.sleep(0.05)
        t = time.monotonic()
        assert await _status(v, _token(PEM_KEY, None, iss="pem")) == 200
        assert time.monotonic() - t < 0.5  # not queued behind the slow fetch
        t = time.monotonic()
        assert await slow == 503
        assert time.monotonic() - t < 2.0  # bounded by the fetch timeout
    finally:
        await v.aclose()


@pytest.mark.asyncio(loop_scope="function")
async def test_verified_tokens_are_cached_until_expiry(server: JwksServer) -> None:
    server.body = {"keys": [_jwk(KEY1, "k1")]}
    v = _verifier(server.url)
    try:
        tok = _token(KEY1, "k1", ttl=2)
        assert await _status(v, tok) == 200
        assert tok in v.cache.entries
        server.body = b"broken"  # the cache answers without the issuer
        assert await _status(v, tok) == 200
        await asyncio.sleep(2.1)
        assert v.cache.get(tok) is None  # kept until its exp, not longer
    finally:
        await v.aclose()
