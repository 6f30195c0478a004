"""Metrics and logs of the real processes: every metric the chart's dashboard and alerts use
exists in the operator's, the worker's or the shim's /metrics, and the worker's JSON logs
name the task on its BMC request lines."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import httpx
from e2e_support import SHIM_SETTINGS, SITE_ID, Cluster, new_rule_id, rack, sleep_rule, task
from prometheus_client.parser import text_string_to_metric_families

from nicotask import api
from nicotask_dev.devenv import monitoring, system
from nicotask_dev.devenv.testing import DevEnvHandle
from nicotask_dev.shim.devissuer import issue_token

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
Samples = dict[str, list[tuple[dict[str, str], float]]]


def scrape(url: str) -> Samples:
    with urllib.request.urlopen(url, timeout=10) as resp:
        text = resp.read().decode()
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def json_lines(path: str) -> list[dict[str, Any]]:
    out = []
    for line in Path(path).read_text(errors="replace").splitlines():
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


def cycle_rule(rule_id: str) -> dict[str, Any]:
    return api.RULE_RESOURCE.manifest(
        "obs-cycle",
        {
            "ruleId": rule_id,
            "operation": "PowerCycle",
            "steps": [
                {
                    "componentType": "Compute",
                    "stage": 1,
                    "timeoutSeconds": 60,
                    "retry": {"maxAttempts": 1},
                    "action": {"type": "PowerControl", "power": "PowerCycle"},
                }
            ],
        },
    )


async def test_chart_metrics_exist_and_logs_name_the_task(
    cluster: Cluster, nicotask_system: DevEnvHandle
) -> None:
    env = nicotask_system
    # Its own shim: one started earlier in the session (e.g. by `make run`'s start_system)
    # may log text; this test reads the shim's JSON lines.
    env.env.stop_process("shim")
    shim_url = system.start_shim(env.env, **SHIM_SETTINGS)
    for sample in ("provider.yaml", "site.yaml"):
        system.kubectl(env.env, "apply", "-f", str(SAMPLES / sample))
    computes = [s for s in env.redfish_systems if s["type"] == "compute"][:1]
    await cluster.create(api.RACKS, rack("obs-rack", env.redfish_url, computes))

    # A Redfish step (BMC requests, a step duration) that finishes ...
    cycle_id = new_rule_id()
    await cluster.create(api.RULES, cycle_rule(cycle_id))
    cycled = await cluster.create(
        api.TASKS, task("obs-cycle", "obs-rack", cycle_id, operation="PowerCycle")
    )
    done = await cluster.wait_status("obs-cycle", "Succeeded", "Failed", timeout=90)
    assert done["status"]["status"] == "Succeeded", done["status"]

    # ... and a task cancelled through the shim (cancel latency, terminate RPC, shim requests).
    sleep_id = new_rule_id()
    await cluster.create(api.RULES, sleep_rule(sleep_id, [120]))
    created = await cluster.create(api.TASKS, task("obs-sleep", "obs-rack", sleep_id))
    uid = created["metadata"]["uid"]
    await cluster.wait_status("obs-sleep", "Running")
    token = issue_token(env.run_dir, "acme", ["acme:PROVIDER_ADMIN"], subject="obs")
    url = f"{shim_url}/v2/org/acme/nico/task/{uid}"
    async with httpx.AsyncClient(timeout=30) as http:
        assert (await http.get(url, params={"siteId": SITE_ID})).status_code == 401
        answer = await http.post(
            f"{url}/cancel", json={"siteId": SITE_ID}, headers={"Authorization": f"Bearer {token}"}
        )
        assert answer.status_code == 202, answer.text
    await cluster.wait_status("obs-sleep", "Terminated", timeout=30)

    operator = scrape(env.env.record("operator").url)
    worker = scrape(f"http://127.0.0.1:{env.env.record('worker').extra['metrics_port']}/metrics")
    shim = scrape(f"{shim_url}/metrics")

    # Every metric of the dashboard and the alerts is served by one of the processes.
    served = set(operator) | set(worker) | set(shim)
    used = monitoring.metric_names(monitoring.dashboard_queries() + monitoring.alert_queries())
    assert used - served == set(), f"not in any /metrics: {sorted(used - served)}"

    # What each process says about the two tasks.
    # Finished tasks are counted by finished_total (the gauge counts live tasks only).
    finished = operator["nicotask_finished_total"]
    assert any(lb == {"status": "Succeeded"} and v >= 1 for lb, v in finished)
    assert operator["nicotask_cancel_latency_seconds_count"][0][1] >= 1
    # Sub-second resolution: a lone cancel takes tens of milliseconds.
    bounds = {float(lb["le"]) for lb, _ in operator["nicotask_cancel_latency_seconds_bucket"]}
    assert {0.01, 0.05, 0.1} <= bounds, sorted(bounds)
    assert operator["nicotask_temporal_reachable"] == [({}, 1.0)]
    bmc = {(lb["action"], lb["outcome"]) for lb, v in worker["nicotask_worker_bmc_requests_total"]}
    assert ("allowed_resets", "ok") in bmc
    assert ("reset_PowerCycle", "ok") in bmc or ("reset_On", "ok") in bmc
    steps = {
        (lb["action_type"], lb["outcome"])
        for lb, v in worker["nicotask_worker_step_duration_seconds_count"]
    }
    assert ("PowerControl", "ok") in steps
    assert [v for _, v in worker["nicotask_temporal_reachable"]] == [1.0]
    assert any(name.startswith("temporal_") for name in worker)
    requests = {(lb["route"], lb["status"]): v for lb, v in shim["nicotask_shim_requests_total"]}
    assert requests[("/v2/org/{org}/nico/task/{id}", "401")] >= 1
    assert requests[("/v2/org/{org}/nico/task/{id}/cancel", "202")] >= 1

    # The worker's JSON lines: one per BMC power request, naming the task.
    lines = json_lines(env.env.record("worker").log)
    resets = [
        line
        for line in lines
        if line["logger"] == "nicotask.worker.bmc"
        and line.get("uid") == cycled["metadata"]["uid"]
        and "reset_" in line["message"]
    ]
    assert resets, "no BMC power request line for the task"
    for line in resets:
        assert line["namespace"] == cluster.ns and line["name"] == "obs-cycle"
        assert line["level"] == "INFO"
    assert any(line["message"].startswith("worker on task queue") for line in lines)
    operator_lines = json_lines(env.env.record("operator").log)
    assert any(line["message"].startswith("operator starting") for line in operator_lines)

    # The operator's and the shim's lines about a task name it: one line per transition
    # (each Event), and the shim's record of who cancelled.
    sleep_uid = created["metadata"]["uid"]
    about = [line for line in operator_lines if line.get("uid") == sleep_uid]
    assert {line["message"].split(":")[0] for line in about} >= {"Started", "Cancelled"}, about
    for line in about:
        assert (line["namespace"], line["name"]) == (cluster.ns, "obs-sleep"), line
    shim_lines = [
        line for line in json_lines(env.env.record("shim").log) if line.get("uid") == sleep_uid
    ]
    assert [line["message"] for line in shim_lines] == ["cancel requested by obs"], json_lines(
        env.env.record("shim").log
    )[-8:]
    assert (shim_lines[0]["namespace"], shim_lines[0]["name"]) == (cluster.ns, "obs-sleep")
