"""Shim settings from the environment (prefix NICOTASK_SHIM_).

NICOTASK_SHIM_ISSUERS          JSON list of trusted JWT issuers, each
                               {"issuer", "audience" (str or list), "jwks_url"
                               | "public_key_pem" | "public_keys_pem",
                               "algorithms" (subset of RS256, ES256)}
NICOTASK_SHIM_ISSUERS_FILE     the same JSON in a file (both are merged); the local
                               environment's dev token issuer (nicotask-dev) is
                               trusted this way: `nicotask dev shim`, `make run`
NICOTASK_SHIM_NAMESPACES       namespaces to serve, comma-separated or a JSON list;
                               empty = all
NICOTASK_SHIM_HOST / _PORT     listen address (default: NICOTASK_SHIM_HOST/PORT
                               of the process settings, 127.0.0.1:8088)
NICOTASK_SHIM_LEEWAY_SECONDS   clock skew allowed on exp/nbf (default 5)
NICOTASK_SHIM_KUBE_TIMEOUT_SECONDS  budget of one request's Kubernetes calls (default 20)
NICOTASK_SHIM_CANCEL_ATTEMPTS  patch rounds on conflict, each after one fresh read (default 5)
NICOTASK_SHIM_INDEX_SYNC_SECONDS  startup wait for the caches' first lists (default 10)
NICOTASK_SHIM_MISS_WAIT_SECONDS   how long a lookup that misses waits for the watch (0.5)
NICOTASK_SHIM_TOKEN_CACHE_SIZE    verified tokens kept (LRU, each until its exp) (10000)
NICOTASK_SHIM_JWKS_CACHE_SECONDS  a JWKS is used at most this long after its fetch (300)
NICOTASK_SHIM_JWKS_MIN_REFETCH_SECONDS  at most one JWKS fetch per issuer this often (10)
NICOTASK_SHIM_JWKS_TIMEOUT_SECONDS  timeout of one JWKS fetch (3)
NICOTASK_SHIM_MAX_BODY_BYTES     request body cap, larger is 413 (65536)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

Algorithm = Literal["RS256", "ES256"]
LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")


def _default_algorithms() -> list[Algorithm]:
    return ["RS256", "ES256"]


class IssuerConfig(BaseModel):
    """One trusted token issuer and how to get its keys."""

    issuer: str = Field(min_length=1)
    audience: str | list[str]
    jwks_url: str | None = None
    public_key_pem: str | None = None
    public_keys_pem: list[str] = Field(default_factory=list)
    algorithms: list[Algorithm] = Field(default_factory=lambda: _default_algorithms())

    @field_validator("jwks_url")
    @classmethod
    def _https_unless_loopback(cls, value: str | None) -> str | None:
        """Keys fetched in the clear could be swapped on the way: https:// only, but for
        an issuer on this host (a local test issuer)."""
        if value is None:
            return None
        url = urlsplit(value)
        if url.scheme == "https":
            return value
        if url.scheme == "http" and url.hostname in LOOPBACK_HOSTS:
            return value
        raise ValueError(f"jwks_url {value!r}: https:// only (http:// only on loopback)")

    @model_validator(mode="after")
    def _has_keys(self) -> IssuerConfig:
        if not self.jwks_url and not self.public_key_pem and not self.public_keys_pem:
            raise ValueError(f"issuer {self.issuer!r}: give jwks_url or public key PEM(s)")
        if not self.algorithms:
            raise ValueError(f"issuer {self.issuer!r}: algorithms must not be empty")
        return self

    @property
    def pems(self) -> list[str]:
        return ([self.public_key_pem] if self.public_key_pem else []) + list(self.public_keys_pem)


class ShimSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="NICOTASK_SHIM_", extra="ignore")

    issuers: list[IssuerConfig] = Field(default_factory=list)
    issuers_file: Path | None = None
    namespaces: Annotated[list[str], NoDecode] = Field(default_factory=list)
    host: str | None = None
    port: int | None = None
    leeway_seconds: float = Field(default=5.0, ge=0, le=300)
    kube_timeout_seconds: float = Field(default=20.0, gt=0)
    cancel_attempts: int = Field(default=5, ge=1, le=100)
    index_sync_seconds: float = Field(default=10.0, ge=0)
    miss_wait_seconds: float = Field(default=0.5, ge=0, le=10)
    token_cache_size: int = Field(default=10000, ge=0)
    jwks_cache_seconds: float = Field(default=300.0, gt=0)
    jwks_min_refetch_seconds: float = Field(default=10.0, ge=0)
    jwks_timeout_seconds: float = Field(default=3.0, gt=0, le=60)
    max_body_bytes: int = Field(default=64 * 1024, ge=1024)

    @field_validator("namespaces", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            if value.strip().startswith("["):
                return json.loads(value)
            return [v.strip() for v in value.split(",") if v.strip()]
        return value

    def all_issuers(self) -> list[IssuerConfig]:
        """Configured issuers, then the issuers file's."""
        out = list(self.issuers)
        if self.issuers_file:
            raw = json.loads(self.issuers_file.read_text())
            out += [IssuerConfig.model_validate(i) for i in raw]
        return out
