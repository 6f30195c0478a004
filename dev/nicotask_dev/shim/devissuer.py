"""A local token issuer for the dev environment: an ES256 key pair in the run folder.

    nicotask dev token --org ORG --role PROVIDER_ADMIN [--sub NAME] [--ttl S]

prints a token signed with `<run dir>/dev-issuer-key.pem` (created on first
use). The shim trusts it when NICOTASK_SHIM_ISSUERS_FILE is the issuers file
`write_issuers_file` writes beside the keys (issuer "nicotask-dev", audience
"nicotask"): `nicotask dev shim` and `make run` start the shim that way. The
runtime shim knows nothing of this module; it only reads an issuers file.

It is for the local environment only. Inside a pod (KUBERNETES_SERVICE_HOST
set) the shim refuses to trust it unless NICOTASK_SHIM_ALLOW_DEV_ISSUER_IN_CLUSTER
is true, logs a loud warning when it is, and never creates a key pair there:
the keys must already exist (mounted), so nobody gets a signing key by accident.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import time
import uuid
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from nicotask.shim.config import IssuerConfig

DEV_ISSUER = "nicotask-dev"
DEV_AUDIENCE = "nicotask"
PRIVATE_KEY_FILE = "dev-issuer-key.pem"
PUBLIC_KEY_FILE = "dev-issuer-pub.pem"
ISSUERS_FILE = "dev-issuers.json"  # what NICOTASK_SHIM_ISSUERS_FILE points at

log = logging.getLogger(__name__)


class DevIssuerRefused(RuntimeError):
    """The dev issuer was asked for where it must not run."""


ALLOW_IN_CLUSTER_ENV = "NICOTASK_SHIM_ALLOW_DEV_ISSUER_IN_CLUSTER"


def in_pod() -> bool:
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST"))


def default_key_dir() -> Path:
    return Path(os.environ.get("NICOTASK_RUN_DIR") or Path.cwd() / ".run" / "dev")


def ensure_keys(key_dir: Path | str) -> tuple[Path, Path]:
    """Create the ES256 key pair in `key_dir` unless it exists. Returns (private, public)."""
    key_dir = Path(key_dir)
    private, public = key_dir / PRIVATE_KEY_FILE, key_dir / PUBLIC_KEY_FILE
    if private.exists() and public.exists():
        return private, public
    if in_pod():
        raise DevIssuerRefused(
            f"refusing to create dev issuer signing keys in {key_dir} inside a pod "
            "(KUBERNETES_SERVICE_HOST is set); the dev issuer is for the local environment"
        )
    key_dir.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    tmp = private.with_suffix(f".tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    pub = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    pub_tmp = public.with_suffix(f".tmp{os.getpid()}")
    pub_tmp.write_bytes(pub)
    # Public first: a reader that sees the private key also sees its public key.
    pub_tmp.replace(public)
    tmp.replace(private)
    return private, public


def _kid(public_pem: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(public_pem).digest()[:12]).decode().rstrip("=")


def issuer_config(key_dir: Path | str, allow_in_cluster: bool = False) -> IssuerConfig:
    """The issuer entry the shim should trust for tokens from this key folder.

    In a pod: refused unless `allow_in_cluster`; then only an existing public key
    is read (nothing is generated) and a warning is logged.
    """
    if in_pod():
        if not allow_in_cluster:
            raise DevIssuerRefused(
                "the dev token issuer (nicotask-dev) would be trusted inside a pod"
                f" (KUBERNETES_SERVICE_HOST is set); set {ALLOW_IN_CLUSTER_ENV}=true only if"
                " you really mean it"
            )
        public = Path(key_dir) / PUBLIC_KEY_FILE
        if not public.exists():
            raise DevIssuerRefused(f"dev issuer in a pod: no public key at {public}")
        log.warning(
            "!!! DEV TOKEN ISSUER TRUSTED INSIDE A POD (key %s): anyone holding its private key "
            "can act as any org's provider admin; never do this in production !!!",
            public,
        )
        return IssuerConfig(
            issuer=DEV_ISSUER,
            audience=DEV_AUDIENCE,
            public_key_pem=public.read_text(),
            algorithms=["ES256"],
        )
    _, public = ensure_keys(key_dir)
    return IssuerConfig(
        issuer=DEV_ISSUER,
        audience=DEV_AUDIENCE,
        public_key_pem=public.read_text(),
        algorithms=["ES256"],
    )


def allowed_in_cluster() -> bool:
    """NICOTASK_SHIM_ALLOW_DEV_ISSUER_IN_CLUSTER=true: the explicit override for a pod."""
    return os.environ.get(ALLOW_IN_CLUSTER_ENV, "").strip().lower() in ("1", "true", "yes")


def write_issuers_file(key_dir: Path | str) -> Path:
    """`<key_dir>/dev-issuers.json`: the dev issuer as the shim reads trusted issuers
    (NICOTASK_SHIM_ISSUERS_FILE). Creates the key pair on first use, like issuer_config
    (in a pod: refused without the override, and then never created)."""
    path = Path(key_dir) / ISSUERS_FILE
    config = issuer_config(key_dir, allow_in_cluster=allowed_in_cluster())
    issuers = [config.model_dump(mode="json", exclude_none=True)]
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(issuers, indent=2) + "\n")
    tmp.replace(path)
    return path


def role_names(org: str, roles: list[str]) -> list[str]:
    """'PROVIDER_ADMIN' -> '<org>:PROVIDER_ADMIN'; names with a ':' are kept as they are."""
    return [r if ":" in r else f"{org}:{r}" for r in roles]


def issue_token(
    key_dir: Path | str,
    org: str,
    roles: list[str],
    subject: str = "dev-user",
    ttl: int = 3600,
    extra_claims: dict[str, Any] | None = None,
) -> str:
    """An ES256 token from the dev issuer with Keycloak-style realm roles."""
    private, public = ensure_keys(key_dir)
    key = serialization.load_pem_private_key(private.read_bytes(), password=None)
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": DEV_ISSUER,
        "aud": DEV_AUDIENCE,
        "sub": subject,
        "preferred_username": subject,
        "iat": now,
        "nbf": now - 5,
        "exp": now + ttl,
        "jti": str(uuid.uuid4()),
        "realm_access": {"roles": role_names(org, roles)},
    }
    claims.update(extra_claims or {})
    return jwt.encode(
        claims,
        key,  # type: ignore[arg-type]
        algorithm="ES256",
        headers={"kid": _kid(public.read_bytes())},
    )


def token_main(
    *,
    org: str,
    roles: list[str] | None = None,
    sub: str = "dev-user",
    ttl: int = 3600,
    run_dir: Path | None = None,
) -> int:
    """`nicotask dev token --org ORG --role PROVIDER_ADMIN [--sub NAME] [--ttl S]`: print a JWT."""
    roles = roles if roles is not None else ["PROVIDER_ADMIN"]
    print(issue_token(run_dir or default_key_dir(), org, roles, sub, ttl))
    return 0
