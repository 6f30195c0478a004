"""The Helm chart's pods on a real kubelet node, with the image built from the Dockerfile.

In order (one release, module scope): install -> the three Deployments Ready;
a NicoTask powers on an emulated BMC and is cancelled through the in-cluster
shim (its Service, port-forwarded), and its workflow is in the session's
Temporal; every pod serves /metrics and logs JSON lines naming the task;
`helm upgrade` rolls every pod while a task runs, and that task is then
cancelled through the new shim pod; tasks deleted, `helm uninstall`: nothing
is left, nothing hangs on a finalizer.

Temporal is the dev server, or with NICOTASK_TEMPORAL=server the Temporal server on
PostgreSQL (`make node-e2e-server`); the pods reach either at the node's address.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from nicotask_dev.crdgen import kubectl_binary
from nicotask_dev.devenv import node, temporal, temporalserver
from nicotask_dev.devenv.helm import ensure_helm
from nicotask_dev.devenv.testing import DevEnvHandle
from nicotask_dev.shim.devissuer import issue_token, issuer_config

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "nicotask"
SAMPLES = REPO / "samples"
RELEASE = "nicotask"
SYSTEM_NS = "nicotask-system"
TASKS_NS = "racks"
SITE_ID = "660e8400-e29b-41d4-a716-446655440000"
API = "nico.dev/v1alpha1"
COMPONENTS = ("operator", "worker", "shim")
# What each Temporal of the session keeps its history and its visibility in
# (DescribeCluster's persistence and visibility stores).
STORES = {"dev": "sqlite", "server": "postgres12"}


class Kube:
    def __init__(self, kubeconfig: Path, home: Path) -> None:
        self.kubeconfig = str(kubeconfig)
        self.kubectl_bin = kubectl_binary()
        self.helm_bin = str(ensure_helm())
        self.env = {
            "PATH": "/usr/bin:/bin",
            "HOME": str(home),
            "KUBECONFIG": self.kubeconfig,
            "HELM_CACHE_HOME": str(home / "cache"),
            "HELM_CONFIG_HOME": str(home / "config"),
            "HELM_DATA_HOME": str(home / "data"),
        }

    def run(self, argv: list[str], stdin: str | None = None, timeout: float = 240) -> str:
        proc = subprocess.run(
            argv,
            input=stdin,
            capture_output=True,
            text=True,
            env=self.env,
            timeout=timeout,
            check=False,
        )
        assert proc.returncode == 0, f"{' '.join(argv[:4])}: {proc.stdout}{proc.stderr}"
        return proc.stdout

    def kubectl(self, *args: str, stdin: str | None = None, timeout: float = 240) -> str:
        return self.run([self.kubectl_bin, "--kubeconfig", self.kubeconfig, *args], stdin, timeout)

    def helm(self, *args: str) -> str:
        return self.run([self.helm_bin, "--kubeconfig", self.kubeconfig, *args], timeout=400)

    def apply(self, *docs: dict[str, Any]) -> None:
        self.kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(docs))

    def get(self, *args: str) -> Any:
        return json.loads(self.kubectl("get", *args, "-o", "json"))

    def pods(self, component: str) -> list[dict[str, Any]]:
        items = self.get("pods", "-n", SYSTEM_NS, "-l", f"app.kubernetes.io/component={component}")[
            "items"
        ]
        return [p for p in items if not p["metadata"].get("deletionTimestamp")]

    def task(self, name: str) -> dict[str, Any]:
        return dict(self.get("nicotask", name, "-n", TASKS_NS))

    def diagnostics(self) -> str:
        out = []
        for args in (("get", "pods", "-A", "-o", "wide"), ("describe", "pods", "-n", SYSTEM_NS)):
            proc = subprocess.run(
                [self.kubectl_bin, "--kubeconfig", self.kubeconfig, *args],
                capture_output=True,
                text=True,
                env=self.env,
                check=False,
            )
            out.append(proc.stdout[-6000:] + proc.stderr[-2000:])
        for component in COMPONENTS:
            proc = subprocess.run(
                [
                    self.kubectl_bin,
                    "--kubeconfig",
                    self.kubeconfig,
                    "logs",
                    "-n",
                    SYSTEM_NS,
                    f"deploy/{RELEASE}-{component}",
                    "--tail=30",
                ],
                capture_output=True,
                text=True,
                env=self.env,
                check=False,
            )
            out.append(f"--- {component}\n{proc.stdout[-4000:]}{proc.stderr[-1000:]}")
        return "\n".join(out)


def wait_for(what: str, check: Callable[[], Any], timeout: float = 120.0) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(1)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}")


def status_of(task: dict[str, Any]) -> str:
    return str(task.get("status", {}).get("status", ""))


def stages(task: dict[str, Any]) -> list[str]:
    report = task.get("status", {}).get("report") or {}
    return [s.get("status", "") for s in report.get("stages", [])]


@pytest.fixture(scope="module")
def kube(node_env: DevEnvHandle, tmp_path_factory: pytest.TempPathFactory) -> Kube:
    return Kube(node_env.kubeconfig, tmp_path_factory.mktemp("helm-home"))


def node_values(node_env: DevEnvHandle, image_tag: str, tmp: Path) -> Path:
    """Values for this node: the local image (never pulled), Temporal through the bridge,
    one replica each, and the dev token issuer trusted by the shim."""
    temporal_port = node_env.temporal_address.rsplit(":", 1)[1]
    repository, tag = image_tag.rsplit(":", 1)
    issuer = issuer_config(node_env.run_dir).model_dump(mode="json", exclude_none=True)
    small = {"requests": {"cpu": "10m", "memory": "64Mi"}, "limits": {"memory": "512Mi"}}
    values = {
        "image": {"repository": repository, "tag": tag, "pullPolicy": "Never"},
        "temporal": {
            "address": f"{node.NODE_IP}:{temporal_port}",
            "namespace": node_env.temporal_namespace,
        },
        "operator": {"reconcileIntervalSeconds": 5, "resources": small},
        "worker": {"replicas": 1, "resources": small},
        "shim": {"replicas": 1, "resources": small, "issuers": [issuer]},
        # No cluster DNS on this node: kopf addresses the API server by this name.
        "hostAliases": [
            {
                "ip": node.KUBERNETES_SERVICE_IP,
                "hostnames": ["kubernetes.default.svc", "kubernetes.default.svc.cluster.local"],
            }
        ],
    }
    path = tmp / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


@pytest.fixture(scope="module")
def release(
    kube: Kube, node_env: DevEnvHandle, image_tag: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    values = node_values(node_env, image_tag, tmp_path_factory.mktemp("values"))
    try:
        kube.helm(
            "install",
            RELEASE,
            str(CHART),
            "-n",
            SYSTEM_NS,
            "--create-namespace",
            "-f",
            str(values),
            "--wait",
            "--timeout",
            "5m",
        )
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{kube.diagnostics()}") from None
    kube.kubectl("create", "namespace", TASKS_NS)
    kube.kubectl("apply", "-f", str(SAMPLES / "provider.yaml"), "-f", str(SAMPLES / "site.yaml"))
    kube.kubectl(
        "create",
        "secret",
        "generic",
        "bmc-credentials",
        "-n",
        TASKS_NS,
        f"--from-literal=username={node_env.redfish_user}",
        f"--from-literal=password={node_env.redfish_password}",
    )
    # Only labelled Secrets are BMC credentials (docs/security.md).
    kube.kubectl(
        "label", "secret", "bmc-credentials", "-n", TASKS_NS, "nico.dev/bmc-credentials=true"
    )
    redfish_port = node_env.redfish_url.rsplit(":", 1)[1]
    compute = next(s for s in node_env.redfish_systems if s["type"] == "compute")
    kube.apply(
        {
            "apiVersion": API,
            "kind": "NicoRack",
            "metadata": {"name": "rack-1", "namespace": TASKS_NS},
            "spec": {
                "siteId": SITE_ID,
                "credentials": {"name": "bmc-credentials"},
                # The emulator speaks plain HTTP: an explicit opt-in on the rack.
                "tls": {"allowInsecureHttp": True},
                "components": [
                    {
                        "id": compute["name"],
                        "type": "Compute",
                        "redfish": {
                            "endpoint": f"http://{node.NODE_IP}:{redfish_port}",
                            "systemId": compute["id"],
                        },
                    }
                ],
            },
        }
    )
    yield values


def rule(name: str, power_on: bool, sleep_seconds: int) -> dict[str, Any]:
    steps: list[dict[str, Any]] = []
    if power_on:
        steps.append(
            {
                "componentType": "Compute",
                "stage": 1,
                "timeoutSeconds": 120,
                "action": {"type": "PowerControl", "power": "On", "expectedState": "On"},
            }
        )
    # Default retries: a worker replaced by `helm upgrade` hands the sleep to the new one.
    steps.append(
        {
            "componentType": "Compute",
            "stage": len(steps) + 1,
            "timeoutSeconds": 900,
            "action": {"type": "Sleep", "durationSeconds": sleep_seconds},
        }
    )
    return {
        "apiVersion": API,
        "kind": "NicoOperationRule",
        "metadata": {"name": name, "namespace": TASKS_NS},
        "spec": {"ruleId": str(uuid.uuid4()), "operation": "PowerOn", "steps": steps},
    }


def start_task(kube: Kube, name: str, rule_doc: dict[str, Any]) -> str:
    kube.apply(rule_doc)
    kube.apply(
        {
            "apiVersion": API,
            "kind": "NicoTask",
            "metadata": {"name": name, "namespace": TASKS_NS},
            "spec": {
                "siteId": SITE_ID,
                "rackRef": "rack-1",
                "operation": "PowerOn",
                "ruleId": rule_doc["spec"]["ruleId"],
            },
        }
    )
    return str(kube.task(name)["metadata"]["uid"])


@contextlib.contextmanager
def port_forward(kube: Kube, target: str, port: int) -> Iterator[str]:
    """`kubectl port-forward <target> :<port>` (API server -> kubelet -> containerd):
    the local base URL while it runs."""
    proc = subprocess.Popen(
        [
            kube.kubectl_bin,
            "--kubeconfig",
            kube.kubeconfig,
            "port-forward",
            "-n",
            SYSTEM_NS,
            target,
            f":{port}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=kube.env,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # "Forwarding from 127.0.0.1:41234 -> 8088"
        match = re.search(r"127\.0\.0\.1:(\d+) ->", line)
        assert match, f"port-forward {target}: {line!r} {proc.stderr.read() if proc.poll() else ''}"
        yield f"http://127.0.0.1:{match.group(1)}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def cancel_through_shim(kube: Kube, env: DevEnvHandle, uid: str) -> dict[str, Any]:
    """The NICo cancel through the shim's Service, port-forwarded as a user would (this
    node runs no kube-proxy); the Service's endpoint is the shim pod."""
    (pod,) = kube.pods("shim")
    slices = kube.get(
        "endpointslices", "-n", SYSTEM_NS, "-l", f"kubernetes.io/service-name={RELEASE}-shim"
    )["items"]
    endpoints = {a for s in slices for e in s.get("endpoints") or [] for a in e["addresses"]}
    assert pod["status"]["podIP"] in endpoints
    token = issue_token(env.run_dir, "acme", ["acme:PROVIDER_ADMIN"], subject="alice")
    with port_forward(kube, f"svc/{RELEASE}-shim", 8088) as url:
        answer = httpx.post(
            f"{url}/v2/org/acme/nico/task/{uid}/cancel",
            json={"siteId": SITE_ID},
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
    assert answer.status_code == 202, answer.text
    return dict(answer.json())


def json_log(kube: Kube, component: str) -> list[dict[str, Any]]:
    """The pod's log (`kubectl logs`), every line a JSON object (jsonLogs: true)."""
    text = kube.kubectl("logs", "-n", SYSTEM_NS, f"deploy/{RELEASE}-{component}")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_pods_run_as_installed(kube: Kube, release: Path, image_tag: str) -> None:
    for component in COMPONENTS:
        (pod,) = kube.pods(component)
        assert pod["spec"]["nodeName"] == node.NODE_NAME
        (container,) = pod["spec"]["containers"]
        assert container["image"] == image_tag
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        (cstatus,) = pod["status"]["containerStatuses"]
        assert cstatus["ready"] is True and cstatus["restartCount"] == 0, cstatus
        # In-cluster config: the ServiceAccount token the kubelet projected.
        assert any(v.get("projected") for v in pod["spec"]["volumes"])


def test_task_on_bmc_cancelled_through_shim(
    kube: Kube, release: Path, node_env: DevEnvHandle
) -> None:
    uid = start_task(kube, "power-on", rule("power-then-wait", True, 600))
    # Stage 1 really powered the emulated BMC on (the worker pod -> bridge -> sushy).
    running = wait_for(
        "stage 1 done",
        lambda: (t := kube.task("power-on")) and stages(t)[:1] == ["completed"] and t,
        timeout=180,
    )
    assert status_of(running) == "Running"
    compute = next(s for s in node_env.redfish_systems if s["type"] == "compute")
    bmc = httpx.get(compute["url"], auth=(node_env.redfish_user, node_env.redfish_password))
    assert bmc.json()["PowerState"] == "On"

    body = cancel_through_shim(kube, node_env, uid)
    assert body["id"] == uid
    done = wait_for(
        "Terminated",
        lambda: (
            (t := kube.task("power-on"))
            and status_of(t) in ("Terminated", "Failed", "Succeeded")
            and t
        ),
        timeout=90,
    )
    assert status_of(done) == "Terminated", done["status"]
    assert done["status"]["cancelRequestedBy"] == "alice"
    assert stages(done) == ["completed", "failed"]


def temporal_json(node_env: DevEnvHandle, *args: str) -> dict[str, Any]:
    """A `temporal` CLI command's JSON answer, from the session's Temporal (from the host)."""
    proc = subprocess.run(
        [
            str(temporal.temporal_binary()),
            *args,
            "--address",
            node_env.temporal_address,
            "--namespace",
            node_env.temporal_namespace,
            "--output",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 0, f"temporal {' '.join(args)}: {proc.stdout}{proc.stderr}"
    return dict(json.loads(proc.stdout))


def test_pods_used_the_sessions_temporal(kube: Kube, release: Path, node_env: DevEnvHandle) -> None:
    """The operator and worker pods were pointed at the session's Temporal through the
    bridge, that Temporal is the kind this run asked for (NICOTASK_TEMPORAL), and the task
    cancelled above is a terminated workflow there."""
    port = node_env.temporal_address.rsplit(":", 1)[1]
    for component in ("operator", "worker"):
        (pod,) = kube.pods(component)
        env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
        assert env["NICOTASK_TEMPORAL_ADDRESS"] == f"{node.NODE_IP}:{port}", component
    cluster = temporal_json(node_env, "operator", "cluster", "describe")
    store = STORES[temporalserver.mode(os.environ)]
    assert (cluster["persistenceStore"], cluster["visibilityStore"]) == (store, store), cluster
    uid = kube.task("power-on")["metadata"]["uid"]
    workflow = temporal_json(node_env, "workflow", "describe", "--workflow-id", uid)
    status = workflow["workflowExecutionInfo"]["status"]
    assert status == "WORKFLOW_EXECUTION_STATUS_TERMINATED", workflow["workflowExecutionInfo"]


def test_pods_serve_metrics_and_log_json_naming_the_task(kube: Kube, release: Path) -> None:
    """After the task above: each pod's /metrics (from the host, by pod IP) and its JSON log."""
    uid = kube.task("power-on")["metadata"]["uid"]
    ports = {"operator": 9090, "worker": 9091, "shim": 8088}
    expected = {
        "operator": "nicotask_cancel_latency_seconds_count",
        "worker": "nicotask_worker_bmc_requests_total",
        "shim": "nicotask_shim_requests_total",
    }
    for component, port in ports.items():
        (pod,) = kube.pods(component)
        text = httpx.get(f"http://{pod['status']['podIP']}:{port}/metrics", timeout=10).text
        assert f"\n{expected[component]}" in text, (component, text[:500])
    assert (
        "\ntemporal_"
        in httpx.get(
            f"http://{kube.pods('worker')[0]['status']['podIP']}:9091/metrics", timeout=10
        ).text
    )

    def about(component: str) -> list[dict[str, Any]]:
        lines = [ln for ln in json_log(kube, component) if ln.get("uid") == uid]
        for line in lines:
            assert (line["namespace"], line["name"]) == (TASKS_NS, "power-on"), line
        return lines

    assert any(ln["message"].startswith("Cancelled:") for ln in about("operator"))
    assert any("reset_On" in ln["message"] for ln in about("worker"))
    assert [ln["message"] for ln in about("shim")] == ["cancel requested by alice"]


def test_upgrade_rolls_pods_while_a_task_runs(
    kube: Kube, release: Path, node_env: DevEnvHandle
) -> None:
    uid = start_task(kube, "long-wait", rule("wait-long", False, 900))
    wait_for("Running", lambda: status_of(kube.task("long-wait")) == "Running", timeout=120)
    before = {c: {p["metadata"]["uid"] for p in kube.pods(c)} for c in COMPONENTS}

    # jsonLogs is in every component's environment: all three Deployments roll.
    try:
        kube.helm(
            "upgrade",
            RELEASE,
            str(CHART),
            "-n",
            SYSTEM_NS,
            "-f",
            str(release),
            "--set",
            "jsonLogs=false",
            "--wait",
            "--timeout",
            "5m",
        )
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{kube.diagnostics()}") from None

    def rolled(component: str) -> bool:
        pods = kube.pods(component)
        return (
            len(pods) == 1
            and pods[0]["metadata"]["uid"] not in before[component]
            and bool(pods[0]["status"].get("containerStatuses", [{}])[0].get("ready"))
        )

    for component in COMPONENTS:
        wait_for(f"{component} rolled", functools.partial(rolled, component))
        env = kube.pods(component)[0]["spec"]["containers"][0]["env"]
        assert {"name": "NICOTASK_JSON_LOGS", "value": "false"} in env
    assert status_of(kube.task("long-wait")) == "Running"

    cancel_through_shim(kube, node_env, uid)
    done = wait_for(
        "Terminated",
        lambda: (
            (t := kube.task("long-wait"))
            and status_of(t) in ("Terminated", "Failed", "Succeeded")
            and t
        ),
        timeout=90,
    )
    assert status_of(done) == "Terminated", done["status"]
    assert stages(done) == ["failed"]


def test_uninstall_in_documented_order_leaves_nothing(kube: Kube, release: Path) -> None:
    # 1. NicoTasks first, while the operator still runs and removes its finalizer.
    kube.kubectl("delete", "nicotasks", "--all", "-n", TASKS_NS, "--wait", "--timeout=60s")
    # 2. The release.
    kube.helm("uninstall", RELEASE, "-n", SYSTEM_NS, "--wait", "--timeout", "3m")
    wait_for(
        "release pods gone", lambda: not kube.get("pods", "-n", SYSTEM_NS)["items"], timeout=120
    )
    for kind in ("deployments", "replicasets", "services", "serviceaccounts"):
        left = [
            i["metadata"]["name"]
            for i in kube.get(kind, "-n", SYSTEM_NS)["items"]
            if i["metadata"]["name"] != "default"
        ]
        assert left == [], (kind, left)
    # Nor anything cluster-scoped of the release (RBAC, the who-cancelled policy).
    for kind in (
        "clusterroles",
        "clusterrolebindings",
        "validatingadmissionpolicies",
        "validatingadmissionpolicybindings",
    ):
        left = [
            i["metadata"]["name"]
            for i in kube.get(kind, "-l", f"app.kubernetes.io/instance={RELEASE}")["items"]
        ]
        assert left == [], (kind, left)
    # 3. Namespaces delete cleanly: nothing in them waits on a finalizer.
    kube.kubectl("delete", "namespace", TASKS_NS, SYSTEM_NS, "--wait", "--timeout=90s")
    stuck = [t["metadata"]["name"] for t in kube.get("nicotasks", "-A")["items"]]
    assert stuck == []
