"""`kubectl nico` against the local control plane: report, cancel and wait on a real NicoTask
(the operator is not running: the test writes the status through the status subresource)."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
from integration_support import create_task, read_task

from nicotask import api, state
from nicotask.kube import Kube
from nicotask_dev import crdgen
from nicotask_dev.devenv.testing import argocd_health

BIN = Path(sys.executable).parent
PLUGIN = BIN / "kubectl-nico"
RULE = "770e8400-e29b-41d4-a716-446655440001"


@pytest.fixture(scope="module")
def crds(devenv: Any) -> None:
    crdgen.install_crds(devenv.kubeconfig)


async def run(devenv: Any, *args: str, via_kubectl: bool = False) -> tuple[int, str, str]:
    env = {
        **os.environ,
        "KUBECONFIG": str(devenv.kubeconfig),
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    argv = [str(BIN / "kubectl"), "nico", *args] if via_kubectl else [str(PLUGIN), *args]
    proc = await asyncio.create_subprocess_exec(
        *argv, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def write_status(
    kube_api: Any, task: api.NicoTask, status: api.NicoTaskStatus
) -> api.NicoTask:
    body = task.model_dump(mode="json", by_alias=True, exclude_none=True)
    body["status"] = status.wire()
    obj = await Kube(kube_api).replace_status(
        api.TASKS, task.metadata.name, body, task.metadata.namespace or ""
    )
    return api.NicoTask.model_validate(obj)


def report(now: dt.datetime) -> api.TaskReportV1:
    S, R = api.TaskReportV1Stage, api.TaskReportV1Step
    t = lambda s: now + dt.timedelta(seconds=s)  # noqa: E731
    return api.TaskReportV1(
        stages=[
            S(
                number=1,
                status="completed",
                started_at=t(0),
                finished_at=t(4),
                steps=[
                    R(
                        component_type="PowerShelf",
                        status="completed",
                        total_components=2,
                        started_at=t(0),
                        finished_at=t(4),
                    )
                ],
            ),
            S(
                number=2,
                status="running",
                started_at=t(4),
                steps=[
                    R(
                        component_type="NVSwitch",
                        status="running",
                        total_components=2,
                        started_at=t(4),
                    )
                ],
            ),
            S(
                number=3,
                status="pending",
                steps=[R(component_type="Compute", status="pending", total_components=6)],
            ),
        ]
    )


async def test_report_cancel_wait(devenv: Any, kube_api: Any, namespace: str, crds: None) -> None:
    task = await create_task(
        kube_api, namespace, "power-on-rack-1", description="Power on rack-1"
    )
    start = dt.datetime(2025, 6, 1, 10, 0, 0, tzinfo=dt.UTC)
    running = state.with_status(
        task, api.TaskStatus.RUNNING, "Running", now=start, report=report(start)
    )
    running.rule_id = RULE
    task = await write_status(kube_api, task, running)

    rc, out, err = await run(devenv, "report", "power-on-rack-1", "-n", namespace)
    assert rc == 0, err
    lines = out.splitlines()
    assert f"Task:       {namespace}/power-on-rack-1  (id {task.metadata.uid})" in lines
    assert "Status:     Running" in lines
    assert f"Rule:       {RULE}" in lines
    assert "Started:    2025-06-01T10:00:00Z" in lines
    table = lines[lines.index("") + 1 :]
    assert table[0].split()[:4] == ["STAGE", "COMPONENT", "STATUS", "TOTAL"]
    assert table[2].split() == ["PowerShelf", "completed", "2", "10:00:00", "10:00:04", "4s"]
    assert table[4].split()[:5] == ["NVSwitch", "running", "2", "10:00:04", "-"]
    assert table[6].split() == ["Compute", "pending", "6", "-", "-", "-"]

    # Through kubectl's plugin discovery (kubectl-nico on PATH).
    rc, out2, err = await run(
        devenv, "report", "power-on-rack-1", "-n", namespace, via_kubectl=True
    )
    assert rc == 0, err
    assert "Status:     Running" in out2 and "PowerShelf" in out2

    # wait times out (non-zero) while the task runs.
    rc, _, err = await run(
        devenv, "wait", "power-on-rack-1", "-n", namespace, "--for=Terminated", "--timeout=1s"
    )
    assert rc == 1 and "timed out" in err

    # cancel sets spec.cancel; a second cancel is a no-op.
    rc, out, err = await run(devenv, "cancel", "power-on-rack-1", "-n", namespace)
    assert rc == 0, err
    assert "cancel requested" in out
    obj = await read_task(kube_api, namespace, "power-on-rack-1")
    assert obj["spec"]["cancel"] is True
    # who cancelled: the caller, as the API server knows it (SelfSubjectReview)
    from nicotask_dev.devenv.pki import ADMIN_USER

    assert obj["metadata"]["annotations"]["nico.dev/cancel-requested-by"] == ADMIN_USER
    assert obj["status"]["status"] == "Running"  # only spec changed
    assert argocd_health(obj) == ("Progressing", "Running (stage 2 of 3) (cancel requested)")
    rc, out, _ = await run(devenv, "cancel", "power-on-rack-1", "-n", namespace)
    assert rc == 0 and "already requested" in out

    # wait --for=Terminated returns 0 once the status says so (written while it waits).
    waiter = asyncio.create_task(
        run(devenv, "wait", "power-on-rack-1", "-n", namespace, "--for=Terminated", "--timeout=30s")
    )
    await asyncio.sleep(1.5)
    assert not waiter.done()
    task = api.NicoTask.model_validate(obj)
    now = start + dt.timedelta(seconds=7)
    closed = state.close_report(task.status.report, state.CANCELLED_BY_USER, now)
    terminated = state.with_status(
        task, api.TaskStatus.TERMINATED, "Cancelled by user (test)", now=now, report=closed
    )
    await write_status(kube_api, task, terminated)
    rc, out, err = await waiter
    assert rc == 0, err
    assert "Terminated" in out

    # Waiting for another terminal status fails fast; --for=finished succeeds.
    rc, _, err = await run(
        devenv, "wait", "power-on-rack-1", "-n", namespace, "--for=Succeeded", "--timeout=30s"
    )
    assert rc == 1 and "finished as Terminated" in err
    rc, _, _ = await run(devenv, "wait", "power-on-rack-1", "-n", namespace)
    assert rc == 0

    obj = await read_task(kube_api, namespace, "power-on-rack-1")
    assert argocd_health(obj) == ("Healthy", "Terminated: Cancelled by user (test)")
    rc, out, _ = await run(devenv, "report", "power-on-rack-1", "-n", namespace)
    assert "Status:     Terminated" in out
    assert "Cancel:     Terminate, requested" in out
    nvswitch = next(line for line in out.splitlines() if "NVSwitch" in line)
    assert nvswitch.split()[:2] == ["NVSwitch", "failed"]
    assert nvswitch.rstrip().endswith("Cancelled by user")


async def test_not_found_and_current_namespace(
    devenv: Any, kube_api: Any, namespace: str, crds: None, tmp_path: Path
) -> None:
    rc, _, err = await run(devenv, "report", "no-such-task", "-n", namespace)
    assert rc == 2
    assert f'nicotask "no-such-task" not found in namespace "{namespace}"' in err
    # The kubeconfig's current namespace is used when -n is absent.
    await create_task(kube_api, namespace, "t1")
    kubeconfig = tmp_path / "kubeconfig"
    await asyncio.to_thread(shutil.copyfile, devenv.kubeconfig, kubeconfig)
    env_kc = {"KUBECONFIG": str(kubeconfig)}
    proc = await asyncio.create_subprocess_exec(
        str(BIN / "kubectl"),
        "config",
        "set-context",
        "--current",
        f"--namespace={namespace}",
        env={**os.environ, **env_kc},
    )
    assert await proc.wait() == 0
    rc, out, err = await run(devenv, "report", "t1", "--kubeconfig", str(kubeconfig))
    assert rc == 0, err
    assert f"{namespace}/t1" in out
    assert "No report yet." in out
