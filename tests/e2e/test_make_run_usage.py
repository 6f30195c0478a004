"""The commands `make run` prints work as printed: the sample task is Running when the
printed curl cancels it, and "start another" makes a Running task the printed kubectl
patch cancels."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from e2e_support import status_of
from kubernetes_asyncio import client

from nicotask import api
from nicotask_dev.devenv import system
from nicotask_dev.devenv.testing import DevEnvHandle

REPO = Path(__file__).resolve().parents[2]
FINISHED = api.FINISHED_STATUS_VALUES


def _printed_block(text: str, first: str, last: str) -> str:
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith(first))
    end = next(i for i in range(start, len(lines)) if lines[i].strip().startswith(last))
    while lines[end].rstrip().endswith("\\"):
        end += 1
    return "\n".join(lines[start : end + 1])


async def _run_printed(text: str, *blocks: tuple[str, str]) -> bytes:
    """Run the printed environment lines, then the printed blocks, as a user would."""
    script = "\n".join(
        [
            "set -euo pipefail",
            _printed_block(text, "export PATH=", 'eval "$(nicotask dev env'),
            *(_printed_block(text, first, last) for first, last in blocks),
        ]
    )
    proc = await asyncio.create_subprocess_exec(
        "bash",
        "-c",
        script,
        cwd=REPO,
        env={**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 0, err.decode()
    return out


async def _wait_status(custom: client.CustomObjectsApi, name: str, *wanted: str) -> dict:
    """The task once its status is one of `wanted` or finished (60 s at most)."""
    obj: dict = {}
    for _ in range(300):
        obj = await custom.get_namespaced_custom_object(
            api.GROUP, api.VERSION, system.SAMPLES_NAMESPACE, api.TASKS, name
        )
        if status_of(obj) in (*wanted, *FINISHED):
            break
        await asyncio.sleep(0.2)
    return obj


async def test_printed_commands_cancel_the_running_sample_tasks(
    nicotask_system: DevEnvHandle, kube_api: client.ApiClient
) -> None:
    env = nicotask_system.env
    # A kept test environment (NICOTASK_TEST_RUN_DIR) may hold them from an earlier run.
    system.kubectl(
        env, "delete", "nicotask", "power-on-rack-1", "power-on-again",
        "-n", system.SAMPLES_NAMESPACE, "--ignore-not-found", "--timeout=60s",
    )  # fmt: skip
    system.start_system(env)  # operator and worker run already: adds the shim and samples
    text = system.usage(env)
    custom = client.CustomObjectsApi(kube_api)

    # The sample task is Running (it would be for minutes) when the printed curl cancels it.
    obj = await _wait_status(custom, "power-on-rack-1", "Running")
    assert status_of(obj) == "Running", obj.get("status")
    out = await _run_printed(
        text, ("TOKEN=$(", '"$NICOTASK_SHIM_URL/v2/org/acme/nico/task/$ID/cancel"')
    )
    assert b'"id"' in out  # the 202 body: the task's last known state
    obj = await _wait_status(custom, "power-on-rack-1")
    assert status_of(obj) == "Terminated"
    assert obj["status"]["message"] == "Cancelled by user"
    assert obj["status"]["cancelRequestedBy"] == "dev-user"

    # "Start another": a fresh task Running with the BMCs partly on, cancelled by kubectl.
    await _run_printed(text, ("sed 's/name: power-on-rack-1/", "| kubectl create -f -"))
    obj = await _wait_status(custom, "power-on-again", "Running")
    assert status_of(obj) == "Running", obj.get("status")
    kubectl_cancel = "kubectl patch nicotask power-on-again"
    await _run_printed(text, (kubectl_cancel, kubectl_cancel))
    obj = await _wait_status(custom, "power-on-again")
    assert status_of(obj) == "Terminated"
    assert obj["status"]["message"] == "Cancelled by user"

    # The printed graceful stop and its escalation are valid patches (server dry run on a
    # fresh task: a real graceful stop of the sample waits out its settle stages).
    system.kubectl(
        env, "delete", "nicotask", "power-on-again", "-n", system.SAMPLES_NAMESPACE,
        "--timeout=60s",
    )  # fmt: skip
    await _run_printed(text, ("sed 's/name: power-on-rack-1/", "| kubectl create -f -"))
    for marker in ('"cancelMode":"Graceful"', '"cancelMode":"Terminate"}'):
        line = next(ln.strip() for ln in text.splitlines() if marker in ln)
        assert line.startswith("kubectl patch nicotask power-on-again"), line
        dry = line.replace("kubectl patch", "kubectl patch --dry-run=server", 1)
        prefix = dry.split(" -p ")[0]
        out = await _run_printed(text.replace(line, dry), (prefix, prefix))
        assert b"patched" in out, out
