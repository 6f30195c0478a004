"""A JWKS issuer for tests: a real JWKS HTTP server (aiohttp on loopback) and tokens.

async with JwksServer() as server:
    server.body = {"keys": [jwk(KEY1, "k1")]}
    token = signed_token(KEY1, "k1", roles=["acme:PROVIDER_ADMIN"])
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import jwt
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from .testing import free_port


def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def jwk(key: Any, kid: str) -> dict[str, Any]:
    """The public JWK of an RSA or P-256 private key, with `kid`."""
    if isinstance(key, rsa.RSAPrivateKey):
        raw = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    else:
        raw = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    return {**raw, "kid": kid, "use": "sig"}


def signed_token(
    key: Any,
    kid: str | None,
    iss: str = "kc",
    ttl: int = 600,
    roles: tuple[str, ...] = ("acme:PROVIDER_ADMIN",),
    subject: str | None = None,
) -> str:
    """A token for audience `nicotask`, RS256 or ES256 by the key's type."""
    alg = "RS256" if isinstance(key, rsa.RSAPrivateKey) else "ES256"
    now = int(time.time())
    claims = {
        "iss": iss,
        "aud": "nicotask",
        "sub": subject or f"u-{time.monotonic_ns()}",
        "exp": now + ttl,
        "realm_access": {"roles": list(roles)},
    }
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

    async def __aenter__(self) -> JwksServer:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()
