"""`nicotask operator` against a Temporal it cannot use: one clear error line naming the
setting, no stack trace, and no readiness (/healthz does not answer) until it is fixed.

Each operator here serves one fresh, empty Kubernetes namespace, so the session's
operator keeps every other task.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from nicotask_dev.devenv import ports, system, temporal
from nicotask_dev.devenv.testing import DevEnvHandle

UNREADY_FOR = 8.0  # seconds the operator must stay unready after its error (it retries)
# A loaded 2-core machine has taken over 10 s just to import the operator: the error line is
# waited for, not expected by a fixed time.
ERROR_WITHIN = 60.0


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def _start(env: DevEnvHandle, name: str, namespace: str, **settings: str) -> str:
    """The operator as a managed process, not waited for; returns its /healthz URL."""
    chosen = ports.pick_ports(["health", "metrics"])
    environ = system.system_environ(
        env.env,
        {
            "NICOTASK_HEALTH_PORT": str(chosen["health"]),
            "NICOTASK_METRICS_PORT": str(chosen["metrics"]),
            "NICOTASK_NAMESPACES": json.dumps([namespace]),
            **settings,
        },
    )
    env.env.start_process(name, [sys.executable, "-m", "nicotask", "operator"], env=environ)
    return f"http://127.0.0.1:{chosen['health']}/healthz"


async def _log(env: DevEnvHandle, name: str) -> str:
    return await asyncio.to_thread(Path(env.env.record(name).log).read_text)


def _error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if "Temporal check failed" in line]


async def _stays_unready(env: DevEnvHandle, name: str, url: str, setting: str) -> str:
    """Never ready; one error line naming `setting`, and UNREADY_FOR seconds after it still
    unready and not said again."""
    deadline = time.monotonic() + ERROR_WITHIN
    while not _error_lines(text := await _log(env, name)):
        assert time.monotonic() < deadline, f"no Temporal error within {ERROR_WITHIN}s:\n{text}"
        assert not await asyncio.to_thread(_healthy, url), "ready despite a bad Temporal setting"
        await asyncio.sleep(0.5)
    deadline = time.monotonic() + UNREADY_FOR
    while time.monotonic() < deadline:
        assert not await asyncio.to_thread(_healthy, url), "ready despite a bad Temporal setting"
        await asyncio.sleep(0.5)
    text = await _log(env, name)
    lines = _error_lines(text)
    assert len(lines) == 1, text  # said once, not once a retry
    assert f"Temporal check failed ({setting})" in lines[0]
    assert "Traceback" not in text, text
    return lines[0]


async def test_wrong_namespace_is_one_error_line_until_the_namespace_is_registered(
    nicotask_system: DevEnvHandle, namespace: str
) -> None:
    env = nicotask_system
    missing = f"late-{secrets.token_hex(3)}"
    url = _start(env, "operator-badns", namespace, NICOTASK_TEMPORAL_NAMESPACE=missing)
    try:
        line = await _stays_unready(env, "operator-badns", url, "NICOTASK_TEMPORAL_NAMESPACE")
        assert f"namespace '{missing}' does not exist at {env.temporal_address}" in line
        # Registered later: the operator becomes ready without a restart.
        await asyncio.to_thread(
            subprocess.run,
            [
                str(temporal.temporal_binary()),
                "operator",
                "namespace",
                "create",
                missing,
                "--retention",
                "24h",
                "--address",
                env.temporal_address,
            ],
            check=True,
            capture_output=True,
            timeout=30,
        )
        deadline = time.monotonic() + 60
        while not await asyncio.to_thread(_healthy, url):
            assert time.monotonic() < deadline, "not ready after the namespace was registered"
            await asyncio.sleep(0.5)
        assert "Temporal check passed" in await _log(env, "operator-badns")
    finally:
        env.env.stop_process("operator-badns")


async def test_wrong_address_is_one_error_line_and_no_readiness(
    nicotask_system: DevEnvHandle, namespace: str
) -> None:
    env = nicotask_system
    nothing = ports.pick_ports(["nothing"])["nothing"]  # free: nothing listens there
    address = f"127.0.0.1:{nothing}"
    url = _start(env, "operator-badaddr", namespace, NICOTASK_TEMPORAL_ADDRESS=address)
    try:
        line = await _stays_unready(env, "operator-badaddr", url, "NICOTASK_TEMPORAL_ADDRESS")
        assert f"no Temporal frontend answers at {address}" in line
    finally:
        env.env.stop_process("operator-badaddr")
