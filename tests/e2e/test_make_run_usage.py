"""The commands `make run` prints work as printed: samples applied, REST cancel by curl."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from e2e_support import status_of
from kubernetes_asyncio import client

from nicotask import api
from nicotask.devenv import system
from nicotask.devenv.testing import DevEnvHandle

REPO = Path(__file__).resolve().parents[2]


def _printed_block(text: str, first: str, last: str) -> str:
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith(first))
    end = next(i for i in range(start, len(lines)) if lines[i].strip().startswith(last))
    while lines[end].rstrip().endswith("\\"):
        end += 1
    return "\n".join(lines[start : end + 1])


async def test_printed_curl_cancels_the_sample_task(
    nicotask_system: DevEnvHandle, kube_api: client.ApiClient
) -> None:
    env = nicotask_system.env
    system.start_system(env)  # operator and worker run already: adds the shim and samples
    text = system.usage(env)
    script = "\n".join(
        [
            "set -euo pipefail",
            _printed_block(text, "export PATH=", 'eval "$(nicotask dev env'),
            _printed_block(
                text, "TOKEN=$(", '"$NICOTASK_SHIM_URL/v2/org/acme/nico/task/$ID/cancel"'
            ),
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
    assert b'"id"' in out  # the 202 body: the task's last known state

    custom = client.CustomObjectsApi(kube_api)
    for _ in range(150):
        obj = await custom.get_namespaced_custom_object(
            api.GROUP, api.VERSION, "default", "nicotasks", "power-on-rack-1"
        )
        if status_of(obj) in ("Terminated", "Succeeded", "Failed"):
            break
        await asyncio.sleep(0.2)
    assert status_of(obj) == "Terminated"
    assert obj["status"]["message"] == "Cancelled by user"
    assert obj["status"]["cancelRequestedBy"] == "dev-user"
