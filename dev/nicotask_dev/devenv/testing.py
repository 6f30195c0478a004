"""pytest fixtures for tests that need the real environment.

Import them into a conftest.py:

    from nicotask_dev.devenv.testing import (  # noqa: F401
        devenv, kube_api, namespace, temporal_client,
    )

`devenv` starts one DevEnv per test session in a temporary run folder and
stops it at the end. With NICOTASK_TEST_RUN_DIR set, it uses (and if needed
starts) the environment in that folder and leaves it running, so repeated
test runs skip the startup: `NICOTASK_TEST_RUN_DIR=.run/test pytest ...`.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from . import temporalserver
from .env import DevEnv


@dataclass
class DevEnvHandle:
    """What tests get from the `devenv` fixture."""

    env: DevEnv
    run_dir: Path
    kubeconfig: Path
    api_url: str
    temporal_address: str
    temporal_namespace: str
    redfish_url: str
    redfish_user: str
    redfish_password: str
    redfish_systems: list[dict[str, Any]]
    external: list[str] = field(default_factory=list)
    state: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_state(cls, env: DevEnv, state: dict[str, Any]) -> DevEnvHandle:
        return cls(
            env=env,
            run_dir=env.run_dir,
            kubeconfig=Path(state["kubeconfig"]),
            api_url=state.get("api_url", ""),
            temporal_address=state["temporal_address"],
            temporal_namespace=state.get("temporal_namespace", "default"),
            redfish_url=state["redfish_url"],
            redfish_user=state["redfish_user"],
            redfish_password=state["redfish_password"],
            redfish_systems=list(state.get("redfish_systems", [])),
            external=list(state.get("external", [])),
            state=state,
        )

    def exports(self) -> dict[str, str]:
        return self.env.exports()


@contextlib.contextmanager
def session_run_dir(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest, basename: str
) -> Iterator[Path]:
    """A fresh run folder for one test session's environment (stop it inside the block).

    PostgreSQL (the Temporal server's database) runs as another user when we are root
    and needs to reach its data folder for as long as it runs: its checkpointer opens
    `global/pg_control` by full path. Every pytest session that starts on the machine
    takes the group and other bits off `/tmp/pytest-of-<user>` (it keeps that folder
    private), which cuts PostgreSQL off mid-run: a PANIC, a database that will not
    restart, and "no usable database connection found" from Temporal. Then the run
    folder is a folder of its own in the system's temporary folder instead, removed at
    the end unless a test failed (its logs explain the failure); pytest keeps its own
    folders of the last sessions.
    """
    if temporalserver.mode(os.environ) != "server" or temporalserver.pg_user() is None:
        yield tmp_path_factory.mktemp(basename)
        return
    run_dir = Path(tempfile.mkdtemp(prefix=f"nicotask-{basename}-"))
    try:
        yield run_dir
    finally:
        if request.session.testsfailed:
            print(f"\nrun folder kept for its logs: {run_dir}", file=sys.stderr)
        else:
            shutil.rmtree(run_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def devenv(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[DevEnvHandle]:
    reuse = os.environ.get("NICOTASK_TEST_RUN_DIR")
    with contextlib.ExitStack() as stack:
        if reuse:
            env = DevEnv(Path(reuse), temporal_ui=False)
        else:
            run_dir = stack.enter_context(session_run_dir(tmp_path_factory, request, "devenv"))
            env = DevEnv(run_dir, temporal_ui=False)
            # Stopped before its run folder goes (the ExitStack unwinds last in, first out).
            stack.callback(env.down)
        state = env.up()
        handle = DevEnvHandle.from_state(env, state)
        with pytest.MonkeyPatch.context() as mp:
            for key, value in env.exports().items():
                mp.setenv(key, value)
            yield handle


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def kube_api(devenv: DevEnvHandle) -> AsyncIterator[Any]:
    """A kubernetes_asyncio ApiClient with the environment's admin kubeconfig."""
    from nicotask.kube import new_api_client

    client = await new_api_client(str(devenv.kubeconfig), component="tests")
    try:
        yield client
    finally:
        await client.close()


@contextlib.asynccontextmanager
async def fresh_namespace(kube_api: Any) -> AsyncIterator[str]:
    """A new namespace `t-<random>`, deleted on exit.

    Without kube-controller-manager a deleted namespace stays Terminating;
    its name is never reused, so that does no harm.
    """
    from kubernetes_asyncio import client

    from nicotask.kube import NotFound, api_errors

    name = f"t-{secrets.token_hex(4)}"
    core = client.CoreV1Api(kube_api)
    await core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    try:
        yield name
    finally:
        with contextlib.suppress(NotFound), api_errors(f"namespace {name}"):
            await core.delete_namespace(name)


@pytest_asyncio.fixture(loop_scope="session")
async def namespace(kube_api: Any) -> AsyncIterator[str]:
    """A fresh namespace for one test; deleted afterwards."""
    async with fresh_namespace(kube_api) as name:
        yield name


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def temporal_client(devenv: DevEnvHandle) -> Any:
    """A temporalio Client connected to the environment's Temporal."""
    from temporalio.client import Client
    from temporalio.contrib.pydantic import pydantic_data_converter

    return await Client.connect(
        devenv.temporal_address,
        namespace=devenv.temporal_namespace,
        data_converter=pydantic_data_converter,
    )


ARGOCD_HEALTH_LUA = Path(__file__).resolve().parents[3] / "charts/nicotask/files/argocd-health.lua"


def argocd_health(obj: dict[str, Any]) -> tuple[str, str]:
    """Argo CD's verdict (status, message) on an object, by the Lua health script the
    chart ships, run in a real Lua runtime."""
    import lupa

    lua = lupa.LuaRuntime()
    lua.globals().obj = lua.table_from(obj, recursive=True)
    result = lua.execute(ARGOCD_HEALTH_LUA.read_text())
    return str(result["status"]), str(result["message"])
