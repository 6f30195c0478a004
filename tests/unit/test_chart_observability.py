"""The chart's observability and hygiene: worker metrics Service, Service/PodMonitors, the
PrometheusRule and its `promtool check rules`, the Grafana dashboard, values.schema.json,
the `helm test` hook and the editor/viewer ClusterRoles."""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_chart_render import CHART, by_kind, container_of, render

from nicotask import healthcheck
from nicotask_dev.devenv import monitoring, promtool
from nicotask_dev.devenv.helm import ensure_helm

ALL_ON = [
    "--set",
    "podMonitor.enabled=true",
    "--set",
    "prometheusRule.enabled=true",
    "--set",
    "grafanaDashboard.enabled=true",
    "--set",
    "serviceMonitor.enabled=true",
]


@pytest.fixture(scope="module")
def helm() -> Path:
    return ensure_helm()


@pytest.fixture(scope="module")
def docs(helm: Path) -> list[dict[str, Any]]:
    return render(helm, *ALL_ON)


def test_worker_serves_metrics_behind_a_service(docs: list[dict[str, Any]]) -> None:
    worker = container_of(by_kind(docs, "Deployment")["rel-nicotask-worker"])
    env = {e["name"]: e.get("value") for e in worker["env"]}
    assert env["NICOTASK_WORKER_METRICS_PORT"] == "9091"
    assert {"name": "metrics", "containerPort": 9091} in worker["ports"]
    svc = by_kind(docs, "Service")["rel-nicotask-worker-metrics"]
    assert {p["name"]: p["port"] for p in svc["spec"]["ports"]} == {"metrics": 9091, "health": 8081}
    assert svc["spec"]["selector"]["app.kubernetes.io/component"] == "worker"
    op = by_kind(docs, "Service")["rel-nicotask-operator-metrics"]
    assert {p["name"]: p["port"] for p in op["spec"]["ports"]} == {"metrics": 9090, "health": 8080}


def test_pod_monitors_scrape_a_port_each_pod_has(docs: list[dict[str, Any]]) -> None:
    monitors = by_kind(docs, "PodMonitor")
    assert set(monitors) == {f"rel-nicotask-{c}" for c in ("operator", "worker", "shim")}
    deployments = by_kind(docs, "Deployment")
    for name, monitor in monitors.items():
        pod = deployments[name]["spec"]["template"]
        selector = monitor["spec"]["selector"]["matchLabels"]
        assert all(pod["metadata"]["labels"][k] == v for k, v in selector.items())
        (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
        assert endpoint["path"] == "/metrics"
        assert endpoint["port"] in {p["name"] for p in container_of(deployments[name])["ports"]}


def test_shim_monitors_go_with_the_shim(helm: Path) -> None:
    docs = render(helm, *ALL_ON, "--set", "shim.enabled=false")
    assert set(by_kind(docs, "PodMonitor")) == {"rel-nicotask-operator", "rel-nicotask-worker"}
    assert set(by_kind(docs, "ServiceMonitor")) == set(by_kind(docs, "PodMonitor"))


def test_prometheus_rule_carries_the_alerts_file(docs: list[dict[str, Any]]) -> None:
    (rule,) = by_kind(docs, "PrometheusRule").values()
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["spec"] == yaml.safe_load(monitoring.ALERTS.read_text())
    # Prometheus' own templates reach Prometheus untouched by helm.
    summaries = [r["annotations"]["summary"] for g in rule["spec"]["groups"] for r in g["rules"]]
    assert any("{{ $labels.pod }}" in s for s in summaries)


def test_alerts_cover_every_failure_signal() -> None:
    names = monitoring.metric_names(monitoring.alert_queries())
    for metric in (
        "nicotask_temporal_reachable",
        "nicotask_cancel_pending_oldest_seconds",
        "nicotask_cancel_latency_seconds_bucket",
        "nicotask_terminate_rpc_seconds_bucket",
        "nicotask_finished_total",
        "nicotask_worker_bmc_requests_total",
        "nicotask_shim_requests_total",
    ):
        assert metric in names
    for rule in monitoring.alert_rules():
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}
        assert rule["annotations"]["summary"]


def test_alerts_pass_promtool_check_rules() -> None:
    proc = promtool.check_rules(monitoring.ALERTS)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(monitoring.alert_rules())} rules found" in proc.stdout


def test_promtool_rejects_a_broken_rule(tmp_path: Path) -> None:
    """The check above can fail: a rule with bad PromQL does not pass."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("groups:\n- name: x\n  rules:\n  - alert: X\n    expr: sum(rate(x[5m])\n")
    proc = promtool.check_rules(bad)
    assert proc.returncode != 0
    assert "parse error" in proc.stdout + proc.stderr


def test_dashboard_configmap_loads(docs: list[dict[str, Any]]) -> None:
    cm = by_kind(docs, "ConfigMap")["rel-nicotask-dashboard"]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    board = json.loads(cm["data"]["nicotask.json"])
    assert board == monitoring.dashboard()
    assert board["uid"] == "nicotask"
    titles = {p["title"] for p in board["panels"]}
    for title in (
        "Tasks by status",
        "Cancel latency",
        "Terminate RPC latency",
        "Oldest CancelPending",
        "Failed rate",
        "BMC errors by action",
        "4xx and 5xx by route",
        "Temporal reachable",
    ):
        assert title in titles
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            assert target["expr"] and target["datasource"]["uid"] == "${datasource}"


def test_dashboard_in_another_namespace(helm: Path) -> None:
    docs = render(
        helm,
        "--set",
        "grafanaDashboard.enabled=true",
        "--set",
        "grafanaDashboard.namespace=monitoring",
        "--set-json",
        'grafanaDashboard.labels={"grafana_dashboard":"nico"}',
    )
    cm = by_kind(docs, "ConfigMap")["rel-nicotask-dashboard"]
    assert cm["metadata"]["namespace"] == "monitoring"
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "nico"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "operator.replicas=two"], "at '/operator/replicas': got string, want integer"),
        (["--set", "worker.metricsPort=70000"], "at '/worker/metricsPort'"),
        (["--set", "temporal.address=temporal-frontend"], "at '/temporal/address'"),
        (["--set", "image.pullPolicy=Sometimes"], "at '/image/pullPolicy'"),
        (
            ["--set", "serviceMonitor.intervall=5s"],
            "at '/serviceMonitor': additional properties 'intervall' not allowed",
        ),
        (["--set", "shim.service.type=Ingress"], "at '/shim/service/type'"),
        (["--set-json", 'shim.issuers=[{"issuer":"x","audience":"y"}]'], "at '/shim/issuers/0'"),
        (["--set-json", 'watchNamespaces=["Bad_NS"]'], "at '/watchNamespaces/0'"),
        # An HTTPRoute attached to no Gateway; a path that is not one; a misspelt key.
        (["--set", "shim.httpRoute.enabled=true"], "at '/shim/httpRoute/parentRefs'"),
        (["--set-json", 'shim.ingress.paths=["v2"]'], "at '/shim/ingress/paths/0'"),
        (["--set", "shim.ingress.hosts=x"], "at '/shim/ingress'"),
    ],
)
def test_schema_rejects_wrong_values(helm: Path, args: list[str], message: str) -> None:
    proc = subprocess.run(
        [str(helm), "template", "rel", str(CHART), *args],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode != 0
    assert "values don't meet the specifications of the schema" in proc.stderr
    assert message in proc.stderr, proc.stderr


def test_schema_accepts_every_documented_value() -> None:
    """values.yaml itself and the all-features file pass (helm lint runs them too)."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    import jsonschema

    for path in (CHART / "values.yaml", CHART / "ci" / "all-features-values.yaml"):
        values = yaml.safe_load(path.read_text())
        jsonschema.validate(values, schema)
    top = set(yaml.safe_load((CHART / "values.yaml").read_text()))
    assert top <= set(schema["properties"])


def test_helm_test_hook(docs: list[dict[str, Any]]) -> None:
    (pod,) = by_kind(docs, "Pod").values()
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    (container,) = pod["spec"]["containers"]
    operator = container_of(by_kind(docs, "Deployment")["rel-nicotask-operator"])
    assert container["image"] == operator["image"]  # the chart's own image
    assert container["command"] == ["python", "-m", "nicotask.healthcheck"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    services = by_kind(docs, "Service")
    for url in container["args"]:
        host, port = url.split("/")[2].split(":")
        assert int(port) in {p["port"] for p in services[host]["spec"]["ports"]}, url
    assert {u.rsplit("/", 1)[1] for u in container["args"]} == {"healthz", "metrics"}
    assert len(container["args"]) == 6


def test_user_roles(docs: list[dict[str, Any]]) -> None:
    roles = by_kind(docs, "ClusterRole")
    admin = roles["rel-nicotask-admin"]
    editor, viewer = roles["rel-nicotask-editor"], roles["rel-nicotask-viewer"]
    aggregate = "rbac.authorization.k8s.io/aggregate-to-"
    assert {k for k in admin["metadata"]["labels"] if k.startswith(aggregate)} == {
        aggregate + "admin"
    }  # not edit: racks name BMCs and their credentials Secrets
    assert editor["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-edit"] == "true"
    assert editor["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-admin"] == "true"
    assert viewer["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"] == "true"

    def rights(role: dict[str, Any]) -> set[tuple[str, str]]:
        return {(r, v) for rule in role["rules"] for r in rule["resources"] for v in rule["verbs"]}

    assert {("nicotasks", v) for v in ("create", "patch", "delete", "get", "list")} <= rights(
        editor
    )
    assert ("nicoracks", "patch") not in rights(editor)
    assert ("nicotasks/status", "patch") not in rights(editor)  # status is the operator's
    assert {v for r, v in rights(viewer)} == {"get", "list", "watch"}
    assert {r for r, _ in rights(viewer)} == {
        "nicotasks",
        "nicotasks/status",
        "nicoracks",
        "nicooperationrules",
        "nicoproviders",
        "nicosites",
    }
    # The admin role writes every kind (tasks as the editor does), never task status.
    writes = {"create", "patch", "update", "delete"}
    kinds = {"nicotasks", "nicoracks", "nicooperationrules", "nicoproviders", "nicosites"}
    assert {(r, v) for r in kinds for v in writes | {"get", "list", "watch"}} <= rights(admin)
    assert rights(editor) <= rights(admin)
    assert {r for r, v in rights(admin) if v in writes} == kinds
    assert ("nicotasks/status", "get") in rights(admin)
    for role in (admin, editor, viewer):
        assert all(rule["apiGroups"] == ["nico.dev"] for rule in role["rules"])


def test_user_roles_options(helm: Path) -> None:
    docs = render(helm, "--set", "rbac.aggregateToDefaultRoles=false")
    for role in ("admin", "editor", "viewer"):
        labels = by_kind(docs, "ClusterRole")[f"rel-nicotask-{role}"]["metadata"]["labels"]
        assert not [k for k in labels if k.startswith("rbac.authorization.k8s.io/")]
    docs = render(helm, "--set", "rbac.userRoles=false")
    assert not {"rel-nicotask-admin", "rel-nicotask-editor", "rel-nicotask-viewer"} & set(
        by_kind(docs, "ClusterRole")
    )


# ---- nicotask.healthcheck (what the hook runs) ---------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = {
            "/healthz": b"ok",
            "/metrics": b"nicotask_tasks 1\n",
            "/empty/metrics": b"# nothing\n",
        }.get(self.path)
        self.send_response(200 if body is not None else 503)
        self.end_headers()
        self.wfile.write(body or b"down")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_healthcheck(server: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert healthcheck.check(f"{server}/healthz") is None
    assert healthcheck.check(f"{server}/metrics") is None
    assert healthcheck.check(f"{server}/down") == "HTTP 503"
    assert healthcheck.check(f"{server}/empty/metrics") == (
        "no nicotask_ or temporal_ metric in the answer"
    )
    assert healthcheck.main([f"{server}/healthz", f"{server}/metrics"]) == 0
    assert "ok   " in capsys.readouterr().out


ALERT_TESTS = """
rule_files: [{rules}]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'nicotask_temporal_reachable{{namespace="nt", pod="worker-1"}}'
        values: '1 1 0x10'
      - series: 'nicotask_cancel_pending_oldest_seconds{{namespace="nt", pod="op-0"}}'
        values: '0 0 400x10'
      - series: 'nicotask_shim_requests_total{{namespace="nt", pod="shim-0", status="202"}}'
        values: '0+10x30'
      - series: 'nicotask_shim_requests_total{{namespace="nt", pod="shim-0", status="500"}}'
        values: '0+5x30'
      - series: 'nicotask_worker_bmc_requests_total{{namespace="nt", pod="w", outcome="ok"}}'
        values: '0+100x30'
    alert_rule_test:
      - eval_time: 4m
        alertname: NicoTaskTemporalUnreachable
        exp_alerts: []
      - eval_time: 8m
        alertname: NicoTaskTemporalUnreachable
        exp_alerts:
          - exp_labels: {{severity: critical, namespace: nt, pod: worker-1}}
            exp_annotations:
              summary: worker-1 cannot reach Temporal
              description: >-
                The Temporal frontend has not answered health checks from nt/worker-1
                for 5 minutes: no task starts, progresses or is cancelled
                (cancels stay CancelPending).
      - eval_time: 5m
        alertname: NicoTaskCancelPendingTooLong
        exp_alerts:
          - exp_labels: {{severity: warning, namespace: nt}}
            exp_annotations:
              summary: A NicoTask cancel has been pending for 6m 40s
              description: >-
                The operator could not terminate a task's workflow yet (see the task's CancelPending
                condition); usually Temporal is unreachable.
      - eval_time: 25m
        alertname: NicoTaskShimServerErrors
        exp_alerts:
          - exp_labels: {{severity: critical, namespace: nt}}
            exp_annotations:
              summary: 33.33% of NICo REST requests get a 5xx
      - eval_time: 25m
        alertname: NicoTaskBmcErrors
        exp_alerts: []
"""


def test_alerts_fire_on_the_series_they_are_about(tmp_path: Path) -> None:
    """`promtool test rules`: the alerts fire (with their labels and text) when they should,
    and not before their `for:` or on healthy series."""
    tests = tmp_path / "alerts_test.yaml"
    tests.write_text(ALERT_TESTS.format(rules=json.dumps(str(monitoring.ALERTS))))
    proc = promtool.test_rules(tests)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout
