"""Integration tests: real kube-apiserver + etcd, Temporal dev server, sushy-tools.

The fixtures (devenv, kube_api, namespace, temporal_client) come from
tests/conftest.py (nicotask_dev.devenv.testing), which also marks every test
here `integration`. Set NICOTASK_TEST_RUN_DIR to reuse a running environment.
The shared `crds` and `pclient` fixtures are below.
"""


import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest_asyncio
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from nicotask_dev import crdgen


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
