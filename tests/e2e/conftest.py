"""The whole system for e2e tests: CRDs, worker and operator as real processes.

They run on the session's DevEnv with short test settings (reconcile every
2 s, a 20 s queue timeout), so lifecycle tests finish in seconds.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import pytest_asyncio
from e2e_support import OPERATOR_SETTINGS, Cluster

from nicotask_dev.devenv import system
from nicotask_dev.devenv.testing import DevEnvHandle


@pytest.fixture(scope="session")
def nicotask_system(devenv: DevEnvHandle) -> Iterator[DevEnvHandle]:
    system.install_crds(devenv.env)
    # JSON logs, as the chart runs them (test_observability reads them).
    system.start_worker(devenv.env, NICOTASK_JSON_LOGS="true")
    system.start_operator(devenv.env, **OPERATOR_SETTINGS)
    yield devenv
    for name in ("operator", "worker"):
        devenv.env.stop_process(name)


@pytest_asyncio.fixture(loop_scope="session")
async def cluster(
    nicotask_system: DevEnvHandle, kube_api: Any, namespace: str
) -> AsyncIterator[Cluster]:
    c = Cluster(kube_api, namespace)
    await c.bmc_secret(nicotask_system.redfish_user, nicotask_system.redfish_password)
    yield c
