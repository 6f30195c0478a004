"""Guards of the shim: the dev issuer in a pod, the body cap, unparsable tasks, the token LRU."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import httpx
import pytest

from nicotask.shim.auth import Principal, TokenCache
from nicotask.shim.cache import SiteCache, TaskCache, record_of
from nicotask.shim.config import ShimSettings
from nicotask.shim.informer import Obj
from nicotask.shim.limits import BodyLimit
from nicotask_dev.shim.devissuer import (
    PRIVATE_KEY_FILE,
    PUBLIC_KEY_FILE,
    DevIssuerRefused,
    ensure_keys,
    issuer_config,
    write_issuers_file,
)

UID = "0f8e8400-e29b-41d4-a716-446655440000"


# ---- dev issuer ---------------------------------------------------------------------------


def test_dev_issuer_refused_in_a_pod_without_override(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    with pytest.raises(DevIssuerRefused, match="ALLOW_DEV_ISSUER_IN_CLUSTER"):
        issuer_config(tmp_path)
    with pytest.raises(DevIssuerRefused):
        write_issuers_file(tmp_path)
    assert not (tmp_path / PRIVATE_KEY_FILE).exists()


def test_dev_issuer_never_generates_keys_in_a_pod(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    with pytest.raises(DevIssuerRefused, match="no public key"):
        issuer_config(tmp_path, allow_in_cluster=True)
    with pytest.raises(DevIssuerRefused, match="refusing to create"):
        ensure_keys(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_the_runtime_shim_does_not_read_the_old_dev_issuer_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The dev issuer is dev tooling (nicotask-dev): the shim trusts it only through an
    # issuers file (`nicotask dev shim`, `make run`), never by a folder of keys.
    monkeypatch.setenv("NICOTASK_SHIM_DEV_ISSUER_DIR", str(tmp_path))
    monkeypatch.setenv("NICOTASK_SHIM_ALLOW_DEV_ISSUER_IN_CLUSTER", "true")
    assert ShimSettings().all_issuers() == []
    assert list(tmp_path.iterdir()) == []


def test_dev_issuer_with_override_and_mounted_key_warns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    ensure_keys(tmp_path)  # made outside the pod, then "mounted"
    (tmp_path / PRIVATE_KEY_FILE).unlink()
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    with caplog.at_level(logging.WARNING):
        cfg = issuer_config(tmp_path, allow_in_cluster=True)
    assert cfg.public_key_pem == (tmp_path / PUBLIC_KEY_FILE).read_text()
    assert "DEV TOKEN ISSUER TRUSTED INSIDE A POD" in caplog.text
    assert not (tmp_path / PRIVATE_KEY_FILE).exists()


def test_dev_issuer_outside_a_pod_creates_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    issuer_config(tmp_path)
    assert (tmp_path / PRIVATE_KEY_FILE).stat().st_mode & 0o777 == 0o600


# ---- body cap -----------------------------------------------------------------------------


async def test_declared_large_body_is_413_before_anything_runs() -> None:
    reached = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        reached.append(scope)
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    limited = BodyLimit(app, max_bytes=1024)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(limited), base_url="http://s") as c:
        r = await c.post("/x", content=b"x" * 1025)
        assert r.status_code == 413
        assert r.json() == {
            "source": "nico",
            "message": "Request body is too large (at most 1024 bytes)",
            "data": None,
        }
        r = await c.post("/x", content=b"x" * 1024)
    assert len(reached) == 1  # only the body within the cap reached the app


# ---- unparsable tasks are skipped ------------------------------------------------------------


def _task(uid: str, rule_id: str) -> dict[str, object]:
    return {
        "apiVersion": "nico.dev/v1alpha1",
        "kind": "NicoTask",
        "metadata": {
            "name": f"t-{uid[:4]}",
            "namespace": "ns",
            "uid": uid,
            "resourceVersion": "5",
            "creationTimestamp": "2026-01-01T00:00:00Z",
        },
        "spec": {
            "siteId": "660e8400-e29b-41d4-a716-446655440000",
            "rackRef": "r",
            "operation": "PowerOn",
            "ruleId": rule_id,
        },
    }


def test_unparsable_task_is_skipped_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        assert record_of(_task(UID, "660e8400e29b41d4a716446655440000")) is None
    assert "does not parse" in caplog.text and UID in caplog.text
    good = record_of(_task(UID, "660e8400-e29b-41d4-a716-446655440000"))
    assert good is not None and good.site_id == "660e8400-e29b-41d4-a716-446655440000"


async def test_task_cache_keeps_the_good_ones() -> None:
    cache = TaskCache(api_client=None, namespaces=[], miss_wait=0)  # type: ignore[arg-type]
    bad_uid = "1f8e8400-e29b-41d4-a716-446655440000"
    cache.informer.put(_task(UID, "660e8400-e29b-41d4-a716-446655440000"))
    cache.informer.put(_task(bad_uid, "not-a-uuid"))
    assert cache.lookup(UID) is not None and cache.lookup(bad_uid) is None
    assert [r.uid for r in cache.records.values()] == [UID]
    # a good task that turns bad leaves the index, and comes back when fixed
    broken = _task(UID, "zz")
    broken["metadata"]["resourceVersion"] = "6"  # type: ignore[index]
    cache.informer.put(broken)
    assert cache.lookup(UID) is None and not cache.by_rack.get("r")


# ---- token cache ------------------------------------------------------------------------------


def test_token_cache_is_a_bounded_lru_with_deadlines() -> None:
    cache = TokenCache(2)
    p = Principal("s")
    cache.put("a", 4e9, p)
    cache.put("b", 4e9, p)
    assert cache.get("a") is p  # a is now the most recent
    cache.put("c", 4e9, p)
    assert cache.get("b") is None and cache.get("a") is p and cache.get("c") is p
    cache.put("old", 1.0, p)  # deadline in the past
    assert cache.get("old") is None


# ---- one NicoSite per siteId -----------------------------------------------------------------


def _site(name: str, site_id: str, provider: str = "acme", uid: str | None = None) -> Obj:
    return {
        "apiVersion": "nico.dev/v1alpha1",
        "kind": "NicoSite",
        "metadata": {"name": name, "uid": uid or name, "resourceVersion": "1"},
        "spec": {"siteId": site_id, "providerRef": provider},
    }


def test_sites_are_found_by_name_and_misnamed_ones_ignored(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A NicoSite is named after its siteId (the CRD says so); one made before that rule,
    under another name, is left out with a warning that names it and its new name."""
    sites = SiteCache(api_client=None, miss_wait=0)  # type: ignore[arg-type]
    site_id = "660E8400-E29B-41D4-A716-446655440000"
    with caplog.at_level(logging.WARNING):
        sites.informer.put(_site("acme-site-1", site_id.lower(), "beta"))
    assert sites.site(site_id) is None
    assert "NicoSite acme-site-1 is ignored" in caplog.text and site_id.lower() in caplog.text
    sites.informer.put(_site(site_id.lower(), site_id))
    found = sites.site(site_id)
    assert found is not None and found.provider_ref == "acme"
    assert sites.site(site_id.lower()) == found
    sites.informer.remove(site_id.lower())
    assert sites.site(site_id) is None
