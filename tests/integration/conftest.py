"""Integration tests: real kube-apiserver + etcd, Temporal dev server, sushy-tools.

The fixtures (devenv, kube_api, namespace, temporal_client) come from
tests/conftest.py (nicotask_dev.devenv.testing), which also marks every test
here `integration`. Set NICOTASK_TEST_RUN_DIR to reuse a running environment.
The shared `crds` and `pclient` fixtures are below, and the shim's: `world` (orgs,
providers, sites), `key_dir` (the dev issuer's keys), `shim_server` and `http`.
"""

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from integration_support import serve_shim
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from nicotask_dev import crdgen
from nicotask_dev.shim.testing import ServerThread, World, make_world


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def crds(devenv: Any) -> None:
    """The CRDs, installed once per session (idempotent)."""
    await asyncio.to_thread(crdgen.install_crds, devenv.kubeconfig)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def pclient(devenv: Any) -> AsyncIterator[Client]:
    """A Temporal client with the pydantic data converter, as the worker's."""
    yield await Client.connect(
        devenv.temporal_address,
        namespace=devenv.temporal_namespace,
        data_converter=pydantic_data_converter,
    )


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def world(kube_api: Any, crds: None) -> World:
    """Orgs with providers and sites (make_world) for the shim's tests."""
    return await make_world(kube_api)


@pytest.fixture(scope="session")
def key_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The dev issuer's keys of `shim_server`."""
    return tmp_path_factory.mktemp("dev-issuer")


@pytest.fixture(scope="session")
def shim_server(devenv: Any, world: World, key_dir: Path) -> Iterator[ServerThread]:
    """The shim on the dev environment, served in-process (one for the session)."""
    with serve_shim(devenv.kubeconfig, key_dir) as server:
        yield server


@pytest_asyncio.fixture(loop_scope="session")
async def http(shim_server: ServerThread) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=shim_server.url, timeout=30) as c:
        yield c
