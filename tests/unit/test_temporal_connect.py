"""How the processes connect to Temporal: TLS files and the Temporal Cloud API key."""

from __future__ import annotations

from typing import Any

import pytest
from temporalio.client import Client, TLSConfig

from nicotask.settings import Settings
from nicotask.temporal import connection as temporal_connection


@pytest.fixture
def connect_kwargs(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    async def fake_connect(target: str, **kwargs: Any) -> str:
        seen.update(kwargs, target=target)
        return "client"

    monkeypatch.setattr(Client, "connect", fake_connect)
    return seen


async def test_api_key_and_tls_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, connect_kwargs: dict[str, Any]
) -> None:
    monkeypatch.setenv("NICOTASK_TEMPORAL_ADDRESS", "eu-west-1.aws.api.temporal.io:7233")
    monkeypatch.setenv("NICOTASK_TEMPORAL_NAMESPACE", "nico.a1b2c")
    monkeypatch.setenv("NICOTASK_TEMPORAL_TLS", "true")
    monkeypatch.setenv("NICOTASK_TEMPORAL_API_KEY", "secret-key")
    settings = Settings()
    assert "secret-key" not in repr(settings)  # never in a log line
    await temporal_connection.connect(settings)
    assert connect_kwargs["target"] == "eu-west-1.aws.api.temporal.io:7233"
    assert connect_kwargs["namespace"] == "nico.a1b2c"
    assert connect_kwargs["api_key"] == "secret-key"
    assert isinstance(connect_kwargs["tls"], TLSConfig)  # system roots: no files given


async def test_no_api_key_and_no_tls_by_default(
    monkeypatch: pytest.MonkeyPatch, connect_kwargs: dict[str, Any]
) -> None:
    for var in ("NICOTASK_TEMPORAL_TLS", "NICOTASK_TEMPORAL_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    await temporal_connection.connect(Settings())
    assert connect_kwargs["api_key"] is None
    assert connect_kwargs["tls"] is False
