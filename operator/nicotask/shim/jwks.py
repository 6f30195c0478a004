"""An issuer's JWKS, fetched asynchronously and kept for a bounded time.

- A fetched key set is used for at most `lifespan` seconds; then it is
  fetched again, so a key the issuer removed stops verifying within that time.
- A token whose `kid` is not in the set triggers one refetch, shared by every
  request waiting for it (single flight) and at most one per `min_interval`.
- Fetches use httpx.AsyncClient with a short timeout: they never block the
  event loop, and only requests that need this issuer's keys wait for one.
- Unreachable, non-200 or malformed JWKS (no usable answer within the
  lifespan): `errors.APIError(503)`. A well-formed set without usable keys
  verifies nothing (the caller answers 401). Keys other than RSA and P-256 EC
  signing keys are ignored.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
import orjson
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from . import errors

log = logging.getLogger(__name__)

MAX_JWKS_BYTES = 512 * 1024


def key_alg(key: Any) -> str | None:
    """The one algorithm a public key may verify: RSA -> RS256, P-256 -> ES256."""
    if isinstance(key, rsa.RSAPublicKey):
        return "RS256"
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return "ES256"
    return None


@dataclass(frozen=True)
class Key:
    kid: str | None
    alg: str
    key: Any


class JwksError(Exception):
    """The JWKS could not be fetched or parsed."""


def parse_jwks(data: Any) -> list[Key]:
    """Usable signing keys of a JWKS document; JwksError when it is not a JWKS at all."""
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        raise JwksError("not a JWKS document (no 'keys' list)")
    out: list[Key] = []
    for raw in data["keys"]:
        if not isinstance(raw, dict) or raw.get("use", "sig") != "sig":
            continue
        try:
            jwk = jwt.PyJWK(raw)
        except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError, KeyError):
            continue
        alg = key_alg(jwk.key)
        if alg is None or raw.get("alg", alg) != alg:
            continue
        kid = raw.get("kid")
        out.append(Key(kid if isinstance(kid, str) else None, alg, jwk.key))
    return out


class JwksKeys:
    """The keys of one issuer's JWKS URL."""

    def __init__(
        self,
        url: str,
        http: httpx.AsyncClient,
        lifespan: float = 300.0,
        min_interval: float = 10.0,
        timeout: float = 3.0,
    ) -> None:
        self.url = url
        self.http = http
        self.lifespan = lifespan
        self.min_interval = min_interval
        self.timeout = timeout
        self.keys: list[Key] = []
        self.fetched_at: float | None = None  # monotonic time of the last good fetch
        self.attempted_at: float | None = None
        self.fetches = 0
        self._flight: asyncio.Task[None] | None = None

    def _fresh(self, now: float) -> bool:
        return self.fetched_at is not None and now - self.fetched_at < self.lifespan

    def _may_fetch(self, now: float) -> bool:
        return self.attempted_at is None or now - self.attempted_at >= self.min_interval

    def matching(self, kid: str | None, alg: str) -> list[Any]:
        return [k.key for k in self.keys if k.alg == alg and (kid is None or k.kid == kid)]

    async def keys_for(self, kid: str | None, alg: str) -> list[Any]:
        """Keys that may verify a token with this kid and alg (fetching when due)."""
        now = time.monotonic()
        if not self._fresh(now):
            if self._may_fetch(now) or self._flight is not None:
                await self._refetch()
            if not self._fresh(time.monotonic()):
                raise errors.APIError(503, errors.KEYS_UNAVAILABLE, {"issuerKeys": self.url})
        found = self.matching(kid, alg)
        if not found and kid is not None and (self._may_fetch(now) or self._flight is not None):
            # A new key (rotation): one shared refetch, at most one per min_interval.
            await self._refetch()
            found = self.matching(kid, alg)
        return found

    async def _refetch(self) -> None:
        if self._flight is None:
            self._flight = asyncio.create_task(self._fetch())
            self._flight.add_done_callback(lambda _: setattr(self, "_flight", None))
        await asyncio.shield(self._flight)

    async def _read_capped(self) -> bytes:
        """The JWKS body, read as it streams in and refused past MAX_JWKS_BYTES."""
        async with self.http.stream("GET", self.url, timeout=self.timeout) as resp:
            if resp.status_code != 200:
                raise JwksError(f"HTTP {resp.status_code}")
            body = bytearray()
            async for chunk in resp.aiter_bytes():
                body += chunk
                if len(body) > MAX_JWKS_BYTES:
                    raise JwksError(f"JWKS larger than {MAX_JWKS_BYTES} bytes")
            return bytes(body)

    async def _fetch(self) -> None:
        self.attempted_at = time.monotonic()
        self.fetches += 1
        try:
            async with asyncio.timeout(self.timeout):  # the whole fetch, body included
                body = await self._read_capped()
            keys = parse_jwks(orjson.loads(body))  # orjson: bounded nesting
        except (httpx.HTTPError, ValueError, JwksError, TimeoutError) as exc:
            log.warning("JWKS %s: fetch failed: %s", self.url, exc)
            return
        if not keys:
            log.warning("JWKS %s has no usable RS256/ES256 signing key", self.url)
        self.keys = keys
        self.fetched_at = time.monotonic()
