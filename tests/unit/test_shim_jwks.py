"""JWKS issuers against a real local JWKS HTTP server (aiohttp on loopback).

Rotation (a removed key stops verifying within the cache lifespan), one
single-flight refetch per unknown kid (rate limited), and a broken JWKS
(empty, malformed, unreachable, slow) answering 401/503, never 500, without
blocking requests that need no JWKS fetch.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from nicotask.shim import errors
from nicotask.shim.auth import JwksSettings, Verifier
from nicotask.shim.config import IssuerConfig
from nicotask_dev.shim.jwks_testing import JwksServer, ec_key, jwk, rsa_key, signed_token
from nicotask_dev.shim.testing import free_port

KEY1 = rsa_key()
KEY2 = ec_key()
PEM_KEY = ec_key()


@pytest_asyncio.fixture(loop_scope="function")
async def server() -> AsyncIterator[JwksServer]:
    async with JwksServer() as s:
        yield s


def _verifier(url: str, **jwks: float) -> Verifier:
    pem = (
        PEM_KEY.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
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
    server.body = {"keys": [jwk(KEY1, "k1")]}
    v = _verifier(server.url, lifespan=0.5, min_interval=0.0)
    try:
        old = signed_token(KEY1, "k1")
        assert await _status(v, old) == 200
        assert await _status(v, old) == 200  # cached
        server.body = {"keys": [jwk(KEY2, "k2")]}  # rotation: k1 removed, k2 added
        new = signed_token(KEY2, "k2")
        assert await _status(v, new) == 200  # unknown kid: refetched at once
        await asyncio.sleep(0.6)
        assert await _status(v, old) == 401  # the token cache and the key set both expired
        assert await _status(v, signed_token(KEY1, "k1")) == 401
        assert await _status(v, new) == 200
    finally:
        await v.aclose()


@pytest.mark.asyncio(loop_scope="function")
async def test_unknown_kid_is_one_single_flight_refetch(server: JwksServer) -> None:
    server.body = {"keys": [jwk(KEY1, "k1")]}
    server.delay = 0.2
    v = _verifier(server.url, lifespan=300, min_interval=1.0)
    try:
        assert await _status(v, signed_token(KEY1, "k1")) == 200
        assert server.requests == 1
        await asyncio.sleep(1.1)  # past the minimum interval after the first fetch
        stranger = ec.generate_private_key(ec.SECP256R1())
        token = signed_token(stranger, "nope")
        codes = await asyncio.gather(*(_status(v, token) for _ in range(50)))
        assert set(codes) == {401}
        assert server.requests == 2  # fifty unknown kids: one refetch, shared
        token = signed_token(stranger, "nope2")
        codes = await asyncio.gather(*(_status(v, token) for _ in range(5)))
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
        assert await _status(v, signed_token(KEY1, "k1")) == status
    finally:
        await v.aclose()


@pytest.mark.asyncio(loop_scope="function")
async def test_unreachable_and_slow_jwks_are_503_and_block_nobody_else(
    server: JwksServer,
) -> None:
    dead = _verifier(f"http://127.0.0.1:{free_port()}/jwks", timeout=1.0)
    try:
        assert await _status(dead, signed_token(KEY1, "k1")) == 503
    finally:
        await dead.aclose()
    server.body = {"keys": [jwk(KEY1, "k1")]}
    server.delay = 3.0
    v = _verifier(server.url, timeout=1.0, min_interval=0.0)
    try:
        slow = asyncio.create_task(_status(v, signed_token(KEY1, "k1")))
        await asyncio.sleep(0.05)
        t = time.monotonic()
        assert await _status(v, signed_token(PEM_KEY, None, iss="pem")) == 200
        assert time.monotonic() - t < 0.5  # not queued behind the slow fetch
        t = time.monotonic()
        assert await slow == 503
        assert time.monotonic() - t < 2.0  # bounded by the fetch timeout
    finally:
        await v.aclose()


@pytest.mark.asyncio(loop_scope="function")
async def test_verified_tokens_are_cached_until_expiry(server: JwksServer) -> None:
    server.body = {"keys": [jwk(KEY1, "k1")]}
    v = _verifier(server.url)
    try:
        tok = signed_token(KEY1, "k1", ttl=2)
        assert await _status(v, tok) == 200
        assert tok in v.cache.entries
        server.body = b"broken"  # the cache answers without the issuer
        assert await _status(v, tok) == 200
        await asyncio.sleep(2.1)
        assert v.cache.get(tok) is None  # kept until its exp, not longer
    finally:
        await v.aclose()


@pytest.mark.asyncio(loop_scope="function")
async def test_oversized_jwks_is_refused_as_it_streams(server: JwksServer) -> None:
    big = [jwk(KEY1, f"k{i}") for i in range(2000)]  # well over 512 KiB
    server.body = {"keys": big}
    v = _verifier(server.url, timeout=2.0)
    try:
        assert await _status(v, signed_token(KEY1, "k1")) == 503
    finally:
        await v.aclose()


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("https://idp.example/jwks", True),
        ("http://127.0.0.1:8080/jwks", True),
        ("http://localhost/jwks", True),
        ("http://idp.example/jwks", False),
        ("ftp://idp.example/jwks", False),
    ],
)
def test_jwks_url_is_https_unless_loopback(url: str, ok: bool) -> None:
    from pydantic import ValidationError

    try:
        IssuerConfig(issuer="kc", audience="nicotask", jwks_url=url)
        accepted = True
    except ValidationError as exc:
        assert "https:// only" in str(exc)
        accepted = False
    assert accepted is ok
