"""Bearer JWT verification (PyJWT) and the org / role checks.

- The token's `iss` (read unverified) picks one configured issuer; unknown
  issuers are refused. The header's `alg` must be one the issuer allows, and
  only RS256 and ES256 exist here: `none` and HS256 are refused before any key
  is touched, and every `jwt.decode` gets an explicit one-element algorithms
  list matching the key's type, so a public key can never serve as an HMAC
  secret (algorithm confusion).
- exp is required; exp, nbf, iss and aud are checked (leeway configurable).
- Roles are Keycloak realm roles in `realm_access.roles`, "<org>:<ROLE>".
  Provider admin = "<org>:PROVIDER_ADMIN", or the legacy
  "<org>:NICO_PROVIDER_ADMIN" / "<org>:FORGE_PROVIDER_ADMIN".
- Org membership = any realm role "<org>:*", or the org listed in an `orgs`
  claim (a list of org names).
- JWKS issuers: keys fetched asynchronously and kept for a bounded time (jwks.py).
- A verified token is cached (bounded LRU keyed by the token) until its exp,
  and for a JWKS issuer at most the JWKS lifespan, so the hot path does no
  signature check and a removed key still stops working within that lifespan.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from . import errors
from .config import IssuerConfig
from .jwks import JwksKeys, key_alg

ALLOWED_ALGORITHMS = ("RS256", "ES256")
PROVIDER_ADMIN_ROLES = ("PROVIDER_ADMIN", "NICO_PROVIDER_ADMIN", "FORGE_PROVIDER_ADMIN")
MAX_TOKEN_BYTES = 16 * 1024


@dataclass(frozen=True)
class Principal:
    """Who called: the token's subject and what the token says about orgs and roles."""

    subject: str
    roles: frozenset[str] = frozenset()
    orgs: frozenset[str] = frozenset()
    claims: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def is_member(self, org: str) -> bool:
        prefix = f"{org}:"
        return org in self.orgs or any(r.startswith(prefix) for r in self.roles)

    def is_provider_admin(self, org: str) -> bool:
        return any(f"{org}:{role}" in self.roles for role in PROVIDER_ADMIN_ROLES)


def _invalid() -> errors.APIError:
    return errors.APIError(401, errors.TOKEN_INVALID)


@dataclass(frozen=True)
class JwksSettings:
    lifespan: float = 300.0
    min_interval: float = 10.0
    timeout: float = 3.0


class _Issuer:
    def __init__(self, cfg: IssuerConfig, http: httpx.AsyncClient, jwks: JwksSettings) -> None:
        self.cfg = cfg
        self.algorithms = [a for a in cfg.algorithms if a in ALLOWED_ALGORITHMS]
        self.keys: list[tuple[str, Any]] = []
        for pem in cfg.pems:
            key = load_pem_public_key(pem.encode())
            alg = key_alg(key)
            if alg is None:
                raise ValueError(f"issuer {cfg.issuer!r}: only RSA and P-256 EC keys are supported")
            self.keys.append((alg, key))
        self.jwks = (
            JwksKeys(cfg.jwks_url, http, jwks.lifespan, jwks.min_interval, jwks.timeout)
            if cfg.jwks_url
            else None
        )
        # How long a token verified with this issuer's keys may be trusted from the cache.
        self.cache_cap = jwks.lifespan if self.jwks is not None else float("inf")

    async def candidate_keys(self, kid: str | None, alg: str) -> list[Any]:
        keys = [key for k_alg, key in self.keys if k_alg == alg]
        if self.jwks is not None:
            keys += await self.jwks.keys_for(kid, alg)
        return keys


class TokenCache:
    """Verified tokens -> Principal, bounded LRU, each entry until its own deadline."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.entries: OrderedDict[str, tuple[float, Principal]] = OrderedDict()

    def get(self, token: str) -> Principal | None:
        hit = self.entries.get(token)
        if hit is None:
            return None
        if time.time() >= hit[0]:
            del self.entries[token]
            return None
        self.entries.move_to_end(token)
        return hit[1]

    def put(self, token: str, until: float, principal: Principal) -> None:
        if self.size <= 0:
            return
        self.entries[token] = (until, principal)
        self.entries.move_to_end(token)
        while len(self.entries) > self.size:
            self.entries.popitem(last=False)


class Verifier:
    """Verify bearer tokens against the configured issuers."""

    def __init__(
        self,
        issuers: Iterable[IssuerConfig],
        leeway: float = 5.0,
        *,
        token_cache_size: int = 10000,
        jwks: JwksSettings | None = None,
    ) -> None:
        self.http = httpx.AsyncClient(follow_redirects=False)
        settings = jwks or JwksSettings()
        self.issuers = {cfg.issuer: _Issuer(cfg, self.http, settings) for cfg in issuers}
        self.leeway = leeway
        self.cache = TokenCache(token_cache_size)

    async def aclose(self) -> None:
        await self.http.aclose()

    async def verify_header(self, authorization: str | None) -> Principal:
        if not authorization:
            raise _invalid()
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _invalid()
        return await self.verify(token.strip())

    async def verify(self, token: str) -> Principal:
        cached = self.cache.get(token)
        if cached is not None:
            return cached
        if len(token) > MAX_TOKEN_BYTES:
            raise _invalid()
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except (jwt.PyJWTError, ValueError, TypeError, RecursionError) as exc:
            raise _invalid() from exc
        alg = header.get("alg")
        kid = header.get("kid")
        issuer = self.issuers.get(str(unverified.get("iss", "")))
        if issuer is None or alg not in ALLOWED_ALGORITHMS or alg not in issuer.algorithms:
            raise _invalid()
        expired = False
        for key in await issuer.candidate_keys(kid if isinstance(kid, str) else None, alg):
            try:
                claims = jwt.decode(
                    token,
                    key,
                    algorithms=[alg],  # one algorithm, matching the key's type
                    audience=issuer.cfg.audience,
                    issuer=issuer.cfg.issuer,
                    leeway=self.leeway,
                    options={"require": ["exp", "iss", "aud"]},
                )
            except jwt.ExpiredSignatureError:
                expired = True  # signature was good (PyJWT checks it first)
                continue
            except (jwt.PyJWTError, ValueError, TypeError):
                continue
            principal = principal_of(claims)
            exp = claims.get("exp")
            if isinstance(exp, int | float):
                self.cache.put(token, min(float(exp), time.time() + issuer.cache_cap), principal)
            return principal
        if expired:
            raise errors.APIError(401, errors.TOKEN_EXPIRED)
        raise _invalid()


def principal_of(claims: dict[str, Any]) -> Principal:
    realm = claims.get("realm_access")
    roles = realm.get("roles", []) if isinstance(realm, dict) else []
    orgs = claims.get("orgs", [])
    subject = claims.get("sub") or claims.get("preferred_username") or "unknown"
    return Principal(
        subject=str(subject),
        roles=frozenset(str(r) for r in roles if isinstance(r, str)),
        orgs=frozenset(str(o) for o in orgs if isinstance(o, str))
        if isinstance(orgs, list)
        else frozenset(),
        claims=claims,
    )


def require_member(principal: Principal, org: str) -> None:
    if not principal.is_member(org):
        raise errors.APIError(403, errors.NOT_MEMBER.format(org=org))


def require_provider_admin(principal: Principal, org: str) -> None:
    if not principal.is_provider_admin(org):
        raise errors.APIError(403, errors.NOT_PROVIDER_ADMIN)
