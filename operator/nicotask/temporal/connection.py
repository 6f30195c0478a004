"""Connecting to Temporal (TLS, API key, the pydantic converter), and a lazy reconnecting client."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from temporalio.client import Client, TLSConfig
from temporalio.contrib.pydantic import pydantic_data_converter

from nicotask.settings import Settings


def tls_config(settings: Settings) -> TLSConfig | bool:
    if not settings.temporal_tls:
        return False

    def read(path: str | None) -> bytes | None:
        return Path(path).read_bytes() if path else None

    return TLSConfig(
        server_root_ca_cert=read(settings.temporal_tls_ca_file),
        client_cert=read(settings.temporal_tls_cert_file),
        client_private_key=read(settings.temporal_tls_key_file),
    )


async def connect(settings: Settings, **kwargs: Any) -> Client:
    """A Temporal client with the pydantic data converter (TLS and API key when configured)."""
    api_key = settings.temporal_api_key
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        data_converter=pydantic_data_converter,
        tls=tls_config(settings),
        api_key=api_key.get_secret_value() if api_key else None,
        **kwargs,
    )


def lazy_client(settings: Settings) -> Callable[[], Awaitable[Client]]:
    """One client, connected on first use (lazily, so a Temporal that is down is retried)."""
    lock = asyncio.Lock()
    holder: dict[str, Client] = {}

    async def get() -> Client:
        async with lock:
            if "client" not in holder:
                holder["client"] = await connect(settings, lazy=True)
            return holder["client"]

    return get
