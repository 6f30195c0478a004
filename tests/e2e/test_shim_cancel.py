"""REST cancel through the shim process, carried out by the operator and the worker."""

from __future__ import annotations

import asyncio
import re
import urllib.request
from pathlib import Path

import httpx
from e2e_support import SHIM_SETTINGS, SITE_ID, Cluster, stage_statuses
from temporalio.client import Client, WorkflowExecutionStatus

from nicotask_dev.devenv import system
from nicotask_dev.devenv.testing import DevEnvHandle
from nicotask_dev.shim.devissuer import issue_token

SAMPLES = Path(__file__).resolve().parents[2] / "samples"


def _metric(env: DevEnvHandle, pattern: str) -> float:
    """One sample of the operator's Prometheus /metrics."""
    url = env.env.record("operator").url
    with urllib.request.urlopen(url, timeout=5) as resp:
        text = resp.read().decode()
    m = re.search(rf"^{pattern} (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def _terminates(env: DevEnvHandle) -> float:
    return _metric(env, "nicotask_terminate_rpc_seconds_count")


async def test_fifty_concurrent_rest_cancels_make_one_terminate(
    cluster: Cluster, nicotask_system: DevEnvHandle, temporal_client: Client
) -> None:
    env = nicotask_system
    shim_url = system.start_shim(env.env, **SHIM_SETTINGS)
    for sample in ("provider.yaml", "site.yaml"):
        system.kubectl(env.env, "apply", "-f", str(SAMPLES / sample))
    created = await cluster.sleeping_task(env)
    uid = created["metadata"]["uid"]
    # Progress writes are coalesced (about one a second): wait for the stage to show running.
    await cluster.wait_task(
        "t1", lambda t: stage_statuses(t)[:1] == ["running"], 30, "stage 1 running"
    )
    before = _terminates(env)

    token = issue_token(env.run_dir, "acme", ["acme:PROVIDER_ADMIN"], subject="alice")
    headers = {"Authorization": f"Bearer {token}"}
    url = f"{shim_url}/v2/org/acme/nico/task/{uid}/cancel"
    async with httpx.AsyncClient(timeout=30) as http:
        answers = await asyncio.gather(
            *(http.post(url, json={"siteId": SITE_ID}, headers=headers) for _ in range(50))
        )
        assert [a.status_code for a in answers] == [202] * 50, [a.text for a in answers[:3]]
        assert {a.json()["id"] for a in answers} == {uid}

        done = await cluster.wait_status("t1", "Terminated", "Succeeded", "Failed", timeout=30)
        assert done["status"]["status"] == "Terminated"
        assert done["status"]["cancelRequestedBy"] == "alice"
        await cluster.wait_event("t1", "Cancelled")
        events = [e for e in await cluster.events("t1") if e.reason == "Cancelled"]
        assert len(events) == 1 and "alice" in events[0].message
        assert _terminates(env) - before == 1
        assert _metric(env, "nicotask_cancel_latency_seconds_count") >= 1
        assert _metric(env, 'nicotask_finished_total\\{status="Terminated"\\}') >= 1
        # The gauge counts live tasks only: finished ones are not even watched.
        assert _metric(env, 'nicotask_tasks\\{status="Terminated"\\}') == 0
        desc = await temporal_client.get_workflow_handle(uid).describe()
        assert desc.status == WorkflowExecutionStatus.TERMINATED

        # The same task, read back through the REST API: final state and report.
        got = await http.get(
            f"{shim_url}/v2/org/acme/nico/task/{uid}", params={"siteId": SITE_ID}, headers=headers
        )
        body = got.json()
        assert got.status_code == 200
        assert body["status"] == "Terminated" and body["message"] == "Cancelled by user"
        assert body["report"]["stages"][0]["status"] == "failed"

        # Cancelling again: 202, unchanged.
        again = await http.post(url, json={"siteId": SITE_ID}, headers=headers)
        assert again.status_code == 202 and again.json()["status"] == "Terminated"
