"""JWT verification: good tokens pass; expired, forged, alg none, HS256 confusion fail."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from nicotask.cli import main as nicotask_cli
from nicotask.shim import errors
from nicotask.shim.auth import Principal, Verifier, principal_of
from nicotask.shim.config import IssuerConfig, ShimSettings
from nicotask_dev.shim.devissuer import (
    DEV_AUDIENCE,
    DEV_ISSUER,
    issue_token,
    issuer_config,
    role_names,
    write_issuers_file,
)


def _pub_pem(key: Any) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())


def _claims(**over: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {
        "iss": "test-rsa",
        "aud": "nicotask",
        "sub": "alice",
        "exp": now + 600,
        "nbf": now - 5,
        "realm_access": {"roles": ["acme:PROVIDER_ADMIN"]},
    }
    base.update(over)
    return {k: v for k, v in base.items() if v is not None}


@pytest.fixture(scope="module")
def verifier(tmp_path_factory: pytest.TempPathFactory) -> Verifier:
    dev_dir = tmp_path_factory.mktemp("dev")
    return Verifier(
        [
            IssuerConfig(
                issuer="test-rsa",
                audience=["nicotask", "other"],
                public_key_pem=_pub_pem(RSA_KEY),
                algorithms=["RS256"],
            ),
            IssuerConfig(issuer="test-ec", audience="nicotask", public_keys_pem=[_pub_pem(EC_KEY)]),
            issuer_config(dev_dir),
        ],
        leeway=0,
    )


async def _fails(verifier: Verifier, token: str, message: str = errors.TOKEN_INVALID) -> None:
    with pytest.raises(errors.APIError) as info:
        await verifier.verify(token)
    assert info.value.status == 401
    assert info.value.message == message


async def test_rs256_and_es256_tokens_verify(verifier: Verifier) -> None:
    p = await verifier.verify(jwt.encode(_claims(), RSA_KEY, algorithm="RS256"))
    assert p.subject == "alice" and p.is_provider_admin("acme")
    p = await verifier.verify(jwt.encode(_claims(iss="test-ec"), EC_KEY, algorithm="ES256"))
    assert p.is_member("acme")


async def test_expired_token_says_expired(verifier: Verifier) -> None:
    token = jwt.encode(_claims(exp=int(time.time()) - 60), RSA_KEY, algorithm="RS256")
    await _fails(verifier, token, errors.TOKEN_EXPIRED)


async def test_expired_and_forged_is_invalid_not_expired(verifier: Verifier) -> None:
    token = jwt.encode(_claims(exp=int(time.time()) - 60), OTHER_RSA_KEY, algorithm="RS256")
    await _fails(verifier, token)


async def test_forged_wrong_key(verifier: Verifier) -> None:
    await _fails(verifier, jwt.encode(_claims(), OTHER_RSA_KEY, algorithm="RS256"))


async def test_alg_none_refused(verifier: Verifier) -> None:
    header = base64.urlsafe_b64encode(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    body = base64.urlsafe_b64encode(json.dumps(_claims()).encode())
    token = f"{header.decode().rstrip('=')}.{body.decode().rstrip('=')}."
    await _fails(verifier, token)


async def test_hs256_with_public_key_as_secret_refused(verifier: Verifier) -> None:
    import hashlib
    import hmac

    secret = _pub_pem(RSA_KEY).encode()
    header = base64.urlsafe_b64encode(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = base64.urlsafe_b64encode(json.dumps(_claims()).encode())
    signing = f"{header.decode().rstrip('=')}.{body.decode().rstrip('=')}"
    sig = base64.urlsafe_b64encode(hmac.new(secret, signing.encode(), hashlib.sha256).digest())
    await _fails(verifier, f"{signing}.{sig.decode().rstrip('=')}")


async def test_rs256_header_on_ec_issuer_key_type_mismatch(verifier: Verifier) -> None:
    # the RSA-only issuer refuses ES256 even when signed by a key it does not know
    await _fails(verifier, jwt.encode(_claims(), EC_KEY, algorithm="ES256"))


@pytest.mark.parametrize(
    "over",
    [
        {"aud": "someone-else"},
        {"iss": "unknown-issuer"},
        {"exp": None},
        {"nbf": int(time.time()) + 3600},
    ],
)
async def test_claims_checked(verifier: Verifier, over: dict[str, Any]) -> None:
    await _fails(verifier, jwt.encode(_claims(**over), RSA_KEY, algorithm="RS256"))


@pytest.mark.parametrize("header", [None, "", "Bearer", "Basic abc", "Bearer not-a-jwt"])
async def test_bad_authorization_headers(verifier: Verifier, header: str | None) -> None:
    with pytest.raises(errors.APIError) as info:
        await verifier.verify_header(header)
    assert (info.value.status, info.value.message) == (401, errors.TOKEN_INVALID)


def test_roles_and_membership() -> None:
    roles = ["acme:VIEWER", "beta:FORGE_PROVIDER_ADMIN"]
    p = principal_of({"sub": "u", "realm_access": {"roles": roles}})
    assert p.is_member("acme") and not p.is_provider_admin("acme")
    assert p.is_member("beta") and p.is_provider_admin("beta")
    assert not p.is_member("acm")  # prefix must end at the colon
    roles = ["gamma:NICO_PROVIDER_ADMIN"]
    p = principal_of({"sub": "u", "orgs": ["gamma"], "realm_access": {"roles": roles}})
    assert p.is_member("gamma") and p.is_provider_admin("gamma")
    assert Principal("x").is_member("acme") is False


async def test_dev_issuer_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    v = Verifier([issuer_config(tmp_path)])
    token = issue_token(tmp_path, "acme", ["PROVIDER_ADMIN"], subject="bob", ttl=60)
    p = await v.verify(token)
    assert p.subject == "bob" and p.is_provider_admin("acme")
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["iss"] == DEV_ISSUER and claims["aud"] == DEV_AUDIENCE
    assert (tmp_path / "dev-issuer-key.pem").stat().st_mode & 0o077 == 0
    argv = ["--org", "acme", "--role", "PROVIDER_ADMIN", "--run-dir", str(tmp_path)]
    assert nicotask_cli(["dev", "token", *argv]) == 0
    printed = capsys.readouterr().out.strip()
    assert (await v.verify(printed)).is_provider_admin("acme")
    assert role_names("acme", ["X", "other:Y"]) == ["acme:X", "other:Y"]


def test_settings_from_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(
        "NICOTASK_SHIM_ISSUERS",
        json.dumps([{"issuer": "i", "audience": "a", "public_key_pem": _pub_pem(EC_KEY)}]),
    )
    monkeypatch.setenv("NICOTASK_SHIM_NAMESPACES", "a,b")
    # the dev issuer as `nicotask dev shim` and `make run` hand it to the shim
    monkeypatch.setenv("NICOTASK_SHIM_ISSUERS_FILE", str(write_issuers_file(tmp_path)))
    s = ShimSettings()
    assert s.namespaces == ["a", "b"]
    assert [i.issuer for i in s.all_issuers()] == ["i", DEV_ISSUER]
    assert s.all_issuers()[1] == issuer_config(tmp_path)
