"""The Helm chart: `helm lint`, `helm template` (default and all-features values) and every
rendered document validated offline against the Kubernetes 1.35 schemas (the release tested)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from nicotask_dev import crdgen
from nicotask_dev.devenv.helm import ensure_helm

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "nicotask"
ALL_FEATURES = CHART / "ci" / "all-features-values.yaml"
KUBE_VERSION = "1.35.0"
# Kinds whose schemas are CRDs the validator does not ship; checked by hand below.
CUSTOM_KINDS = {
    "ServiceMonitor",
    "PodMonitor",
    "PrometheusRule",
    "ClusterKopfPeering",
    "KopfPeering",
    "HTTPRoute",
}


@pytest.fixture(scope="module")
def helm() -> Path:
    return ensure_helm()


def render(helm: Path, *args: str) -> list[dict[str, Any]]:
    proc = subprocess.run(
        [
            str(helm),
            "template",
            "rel",
            str(CHART),
            "--namespace",
            "nicotask-system",
            "--kube-version",
            KUBE_VERSION,
            *args,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def container_of(deployment: dict[str, Any]) -> dict[str, Any]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


@pytest.mark.parametrize("values", [None, ALL_FEATURES], ids=["default", "all-features"])
def test_helm_lint(helm: Path, values: Path | None) -> None:
    args = ["--strict"] + (["-f", str(values)] if values else [])
    proc = subprocess.run(
        [str(helm), "lint", str(CHART), *args], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("values", [None, ALL_FEATURES], ids=["default", "all-features"])
def test_rendered_documents_validate(helm: Path, values: Path | None) -> None:
    docs = render(helm, *(["-f", str(values)] if values else []))
    assert docs
    for doc in docs:
        if doc["kind"] in CUSTOM_KINDS:
            continue
        try:
            kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']}: {exc.message} at {exc.path}")


def test_chart_crds_are_the_generated_ones() -> None:
    assert crdgen.check(CHART / "crds", None) == []
    for path in (CHART / "crds").glob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)


def test_defaults(helm: Path) -> None:
    docs = render(helm)
    kinds = {d["kind"] for d in docs}
    assert not kinds & {"ServiceMonitor", "PodMonitor", "PrometheusRule", "ConfigMap"}
    assert "ClusterKopfPeering" not in kinds
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    deployments = by_kind(docs, "Deployment")
    assert set(deployments) == {"rel-nicotask-operator", "rel-nicotask-worker", "rel-nicotask-shim"}
    ports = {"operator": 8080, "worker": 8081, "shim": 8088}
    for name, dep in deployments.items():
        component = name.rsplit("-", 1)[1]
        pod = dep["spec"]["template"]["spec"]
        assert pod["serviceAccountName"] == f"rel-nicotask-{component}"
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == 10001
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert {"name": "tmp", "emptyDir": {}} in pod["volumes"]
        (container,) = pod["containers"]
        assert container["args"] == [component]
        assert container["image"] == f"ghcr.io/nicotask/nicotask:{chart['appVersion']}"
        sc = container["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
        port = {p["name"]: p["containerPort"] for p in container["ports"]}
        probe_port = container["livenessProbe"]["httpGet"]["port"]
        assert port[probe_port] == ports[component]
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        ready = "/readyz" if component == "shim" else "/healthz"  # the shim: caches synced
        assert container["readinessProbe"]["httpGet"]["path"] == ready
    operator = deployments["rel-nicotask-operator"]
    env = {e["name"]: e.get("value") for e in container_of(operator)["env"]}
    assert "NICOTASK_PEERING" not in env
    assert env["NICOTASK_NAMESPACES"] == "[]"
    assert operator["spec"]["strategy"]["type"] == "Recreate"
    shim = container_of(deployments["rel-nicotask-shim"])
    shim_env = {e["name"]: e.get("value") for e in shim["env"]}
    assert shim_env["NICOTASK_SHIM_HOST"] == "0.0.0.0"
    assert "NICOTASK_TEMPORAL_ADDRESS" not in shim_env
    assert set(by_kind(docs, "PodDisruptionBudget")) == set(deployments)
    assert set(by_kind(docs, "ValidatingAdmissionPolicy")) == {"rel-nicotask-cancel-requested-by"}
    assert set(by_kind(docs, "ClusterRoleBinding")) == {
        "rel-nicotask-operator",
        "rel-nicotask-operator-cluster",
        "rel-nicotask-worker",
        "rel-nicotask-shim",
        "rel-nicotask-shim-cluster",
    }


def test_all_features(helm: Path) -> None:
    docs = render(helm, "-f", str(ALL_FEATURES))
    deployments = by_kind(docs, "Deployment")
    operator = deployments["rel-nicotask-operator"]
    container = operator["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["NICOTASK_PEERING"] == "nicotask-site-a"
    assert env["NICOTASK_NAMESPACES"] == '["site-a","site-b"]'
    assert env["NICOTASK_SITE_SELECTOR"] == "nico.dev/site=660e8400-e29b-41d4-a716-446655440000"
    assert env["NICOTASK_TEMPORAL_TLS"] == "true"
    assert env["NICOTASK_TEMPORAL_TLS_CA_FILE"] == "/etc/nicotask/temporal-tls/ca.crt"
    assert container["image"] == "registry.example.com/nicotask/nicotask:0.1.0-test"
    assert operator["spec"]["strategy"]["type"] == "RollingUpdate"
    assert {"name": "temporal-tls", "secret": {"secretName": "temporal-client-tls"}} in (
        operator["spec"]["template"]["spec"]["volumes"]
    )
    peerings = [d for d in docs if d["kind"] == "KopfPeering"]
    assert {d["metadata"]["namespace"] for d in peerings} == {"site-a", "site-b"}
    for peering in peerings:
        assert peering["apiVersion"] == "kopf.dev/v1"
        assert peering["metadata"]["name"] == "nicotask-site-a"
    # Namespaced RBAC: RoleBindings in the watched namespaces, no cluster-wide task rights.
    bindings = [d for d in docs if d["kind"] == "RoleBinding"]
    assert {(b["metadata"]["namespace"], b["roleRef"]["name"]) for b in bindings} == {
        (ns, f"rel-nicotask-{c}")
        for ns in ("site-a", "site-b")
        for c in ("operator", "worker", "shim")
    }
    assert set(by_kind(docs, "ClusterRoleBinding")) == {
        "rel-nicotask-operator-cluster",
        "rel-nicotask-shim-cluster",
    }
    op_rules = by_kind(docs, "ClusterRole")["rel-nicotask-operator"]["rules"]
    assert {
        "apiGroups": ["kopf.dev"],
        "resources": ["kopfpeerings"],
        "verbs": ["get", "list", "watch", "patch"],
    } in op_rules
    shim = deployments["rel-nicotask-shim"]["spec"]["template"]["spec"]
    shim_env = {e["name"]: e.get("value") for e in shim["containers"][0]["env"]}
    assert shim_env["NICOTASK_SHIM_ISSUERS_FILE"] == "/etc/nicotask/issuers/issuers.json"
    assert '"issuer":"https://issuer.example.com/"' in shim_env["NICOTASK_SHIM_ISSUERS"]
    assert by_kind(docs, "Service")["rel-nicotask-shim"]["spec"]["type"] == "LoadBalancer"
    # ServiceMonitors, checked by hand (their schema is the Prometheus Operator's CRD): one per
    # component, each selecting exactly its component's Service and a port that Service has.
    monitors = by_kind(docs, "ServiceMonitor")
    assert set(monitors) == {f"rel-nicotask-{c}" for c in ("operator", "worker", "shim")}
    services = by_kind(docs, "Service")
    for name, monitor in monitors.items():
        assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
        assert monitor["metadata"]["labels"]["release"] == "prometheus"
        assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["nicotask-system"]}
        selector = monitor["spec"]["selector"]["matchLabels"]
        (svc,) = [
            s
            for s in services.values()
            if all(s["metadata"]["labels"].get(k) == v for k, v in selector.items())
        ]
        (endpoint,) = monitor["spec"]["endpoints"]
        assert endpoint["path"] == "/metrics" and endpoint["interval"] == "15s"
        assert endpoint["port"] in {p["name"] for p in svc["spec"]["ports"]}, name
    assert {m["spec"]["endpoints"][0]["port"] for m in monitors.values()} == {"metrics", "http"}


def test_dockerfile_exposes_every_port_the_chart_uses(helm: Path) -> None:
    """The image documents the ports its three commands listen on by default."""
    exposed = {
        int(p)
        for line in (REPO / "Dockerfile").read_text().splitlines()
        if line.startswith("EXPOSE ")
        for p in line.split()[1:]
    }
    used = {
        port["containerPort"]
        for dep in by_kind(render(helm), "Deployment").values()
        for port in container_of(dep)["ports"]
    }
    assert used == exposed == {8080, 8081, 8088, 9090, 9091}


def test_peering_on_with_replicas_cluster_wide(helm: Path) -> None:
    docs = render(helm, "--set", "operator.replicas=3")
    (peering,) = by_kind(docs, "ClusterKopfPeering").values()
    assert peering["metadata"]["name"] == "rel-nicotask"
    rules = by_kind(docs, "ClusterRole")["rel-nicotask-operator-cluster"]["rules"]
    assert {
        "apiGroups": ["kopf.dev"],
        "resources": ["clusterkopfpeerings"],
        "verbs": ["get", "list", "watch", "patch"],
    } in rules


def test_shim_disabled(helm: Path) -> None:
    docs = render(helm, "--set", "shim.enabled=false")
    assert not [d for d in docs if d["metadata"]["name"].startswith("rel-nicotask-shim")]
    docs = render(helm, "--set", "shim.enabled=false", "-f", str(ALL_FEATURES))
    assert not by_kind(docs, "Ingress")


# ---- the way in to the shim: Ingress, HTTPRoute --------------------------------------------


def test_shim_ingress_and_route_off_by_default(helm: Path) -> None:
    kinds = {d["kind"] for d in render(helm)}
    assert not kinds & {"Ingress", "HTTPRoute"}


def test_shim_ingress(helm: Path) -> None:
    docs = render(helm, "-f", str(ALL_FEATURES))
    (ingress,) = by_kind(docs, "Ingress").values()
    service = by_kind(docs, "Service")["rel-nicotask-shim"]
    assert ingress["metadata"]["name"] == "rel-nicotask-shim"
    assert ingress["metadata"]["annotations"] == {"cert-manager.io/cluster-issuer": "letsencrypt"}
    assert ingress["metadata"]["labels"]["app.kubernetes.io/component"] == "shim"
    spec = ingress["spec"]
    assert spec["ingressClassName"] == "nginx"
    assert spec["tls"] == [{"secretName": "nico-rest-api-tls", "hosts": ["nico-api.example.com"]}]
    (rule,) = spec["rules"]
    assert rule["host"] == "nico-api.example.com"
    (path,) = rule["http"]["paths"]
    # Only the API is routed; the backend is the shim's Service, by a port it has.
    assert (path["path"], path["pathType"]) == ("/v2/", "Prefix")
    backend = path["backend"]["service"]
    assert backend["name"] == service["metadata"]["name"]
    assert backend["port"]["name"] in {p["name"] for p in service["spec"]["ports"]}


def test_shim_ingress_minimal(helm: Path) -> None:
    """Enabled with nothing else set: any host, the default class, no TLS section."""
    docs = render(helm, "--set", "shim.ingress.enabled=true")
    (ingress,) = by_kind(docs, "Ingress").values()
    assert "annotations" not in ingress["metadata"]
    assert set(ingress["spec"]) == {"rules"}
    (rule,) = ingress["spec"]["rules"]
    assert set(rule) == {"http"}


def test_shim_http_route(helm: Path) -> None:
    docs = render(
        helm,
        "--set",
        "shim.httpRoute.enabled=true",
        "--set",
        "shim.service.port=9000",
        "--set-json",
        'shim.httpRoute.parentRefs=[{"name":"nico","namespace":"gateways","sectionName":"https"}]',
        "--set-json",
        'shim.httpRoute.hostnames=["nico-api.example.com"]',
        "--set-json",
        'shim.httpRoute.paths=["/v2/","/openapi.json"]',
    )
    (route,) = by_kind(docs, "HTTPRoute").values()
    assert route["apiVersion"] == "gateway.networking.k8s.io/v1"
    spec = route["spec"]
    assert spec["parentRefs"] == [{"name": "nico", "namespace": "gateways", "sectionName": "https"}]
    assert spec["hostnames"] == ["nico-api.example.com"]
    (rule,) = spec["rules"]
    assert rule["matches"] == [
        {"path": {"type": "PathPrefix", "value": "/v2/"}},
        {"path": {"type": "PathPrefix", "value": "/openapi.json"}},
    ]
    assert rule["backendRefs"] == [{"name": "rel-nicotask-shim", "port": 9000}]
    assert by_kind(docs, "Service")["rel-nicotask-shim"]["spec"]["ports"][0]["port"] == 9000


def test_peering_crds_shipped() -> None:
    docs = list(yaml.safe_load_all((CHART / "crds" / "kopf.dev_peerings.yaml").read_text()))
    names = {d["metadata"]["name"]: d for d in docs}
    assert set(names) == {"clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev"}
    assert names["clusterkopfpeerings.kopf.dev"]["spec"]["scope"] == "Cluster"
    assert names["kopfpeerings.kopf.dev"]["spec"]["scope"] == "Namespaced"
    for doc in docs:
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)


def _rights(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    return {
        (g, r, v)
        for rule in rules
        for g in rule["apiGroups"]
        for r in rule["resources"]
        for v in rule["verbs"]
    }


def test_shim_rights_match_deploy_rbac(helm: Path) -> None:
    """deploy/rbac/shim.yaml (the shim's own manifest) and the chart grant the same rights."""
    manifest = list(yaml.safe_load_all((REPO / "deploy" / "rbac" / "shim.yaml").read_text()))
    expected = _rights([r for d in manifest if d["kind"] == "ClusterRole" for r in d["rules"]])
    roles = by_kind(render(helm), "ClusterRole")
    chart = _rights(
        roles["rel-nicotask-shim"]["rules"] + roles["rel-nicotask-shim-cluster"]["rules"]
    )
    assert chart == expected


def _egress_cidrs(policy: dict[str, Any]) -> list[str]:
    return [
        peer["ipBlock"]["cidr"]
        for rule in policy["spec"]["egress"]
        for peer in rule.get("to", [])
        if "ipBlock" in peer
    ]


def test_worker_hardening_defaults(helm: Path) -> None:
    docs = render(helm)
    worker = container_of(by_kind(docs, "Deployment")["rel-nicotask-worker"])
    env = {e["name"]: e.get("value") for e in worker["env"]}
    assert env["NICOTASK_NAMESPACES"] == "[]"  # cluster-wide, as watchNamespaces says
    assert env["NICOTASK_WORKER_BMC_NETWORKS"] == "[]"
    assert env["NICOTASK_WORKER_PROGRESS_MAX_CONCURRENT_ACTIVITIES"] == "50"
    rules = by_kind(docs, "ClusterRole")["rel-nicotask-worker"]["rules"]
    assert _rights(rules) == {
        ("nico.dev", "nicotasks", "get"),
        ("nico.dev", "nicoracks", "get"),
        ("nico.dev", "nicooperationrules", "list"),
        ("nico.dev", "nicotasks/status", "get"),
        ("nico.dev", "nicotasks/status", "update"),
        ("nico.dev", "nicotasks/status", "patch"),
        ("", "secrets", "get"),
        ("", "events", "create"),
    }
    policies = by_kind(docs, "NetworkPolicy")
    assert set(policies) == {"rel-nicotask-operator", "rel-nicotask-worker", "rel-nicotask-shim"}
    for policy in policies.values():
        assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    # The worker may reach BMCs anywhere but loopback and link-local (cloud metadata).
    worker_policy = policies["rel-nicotask-worker"]
    blocks = [
        peer["ipBlock"]
        for rule in worker_policy["spec"]["egress"]
        for peer in rule.get("to", [])
        if "ipBlock" in peer
    ]
    assert {"cidr": "0.0.0.0/0", "except": ["127.0.0.0/8", "169.254.0.0/16"]} in blocks
    # Probes reach the health ports and Prometheus the metrics ports (the shim: its one port).
    ingress_ports = {
        name.removeprefix("rel-nicotask-"): sorted(
            p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]
        )
        for name, policy in policies.items()
    }
    assert ingress_ports == {"operator": [8080, 9090], "worker": [8081, 9091], "shim": [8088]}
    # Only the worker talks to BMCs; the shim never talks to Temporal.
    assert _egress_cidrs(policies["rel-nicotask-operator"]) == []
    shim_ports = {
        p["port"]
        for r in policies["rel-nicotask-shim"]["spec"]["egress"]
        for p in r.get("ports", [])
    }
    assert 7233 not in shim_ports
    assert not [d for d in docs if d["metadata"].get("namespace") == "temporal"]


def test_worker_hardening_all_features(helm: Path) -> None:
    docs = render(
        helm, "-f", str(ALL_FEATURES), "--set", "networkPolicy.temporal.ingress.enabled=true"
    )
    worker = container_of(by_kind(docs, "Deployment")["rel-nicotask-worker"])
    env = {e["name"]: e.get("value") for e in worker["env"]}
    assert env["NICOTASK_NAMESPACES"] == '["site-a","site-b"]'
    assert env["NICOTASK_WORKER_BMC_NETWORKS"] == '["10.20.0.0/16"]'
    assert env["NICOTASK_TEMPORAL_TLS_CERT_FILE"] == "/etc/nicotask/temporal-tls/tls.crt"
    # Secrets only in the served namespaces: no cluster-wide binding of the worker.
    assert "rel-nicotask-worker" not in by_kind(docs, "ClusterRoleBinding")
    policies = {
        (d["metadata"]["namespace"], d["metadata"]["name"]): d
        for d in docs
        if d["kind"] == "NetworkPolicy"
    }
    worker_policy = policies[("nicotask-system", "rel-nicotask-worker")]
    assert sorted(_egress_cidrs(worker_policy)) == ["10.0.0.1/32", "10.20.0.0/16", "10.96.10.0/24"]
    operator_policy = policies[("nicotask-system", "rel-nicotask-operator")]
    assert sorted(_egress_cidrs(operator_policy)) == ["10.0.0.1/32", "10.96.10.0/24"]
    shim_policy = policies[("nicotask-system", "rel-nicotask-shim")]
    (shim_in,) = shim_policy["spec"]["ingress"]
    assert shim_in["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}
    ]
    frontend = policies[("temporal", "rel-nicotask-temporal-frontend")]
    peers = frontend["spec"]["ingress"][0]["from"]
    components = {
        p["podSelector"]["matchLabels"].get("app.kubernetes.io/component")
        for p in peers
        if "namespaceSelector" in p
    }
    assert components == {"operator", "worker"}
    assert {"podSelector": {}} in peers


def test_network_policies_off(helm: Path) -> None:
    docs = render(helm, "--set", "networkPolicy.enabled=false")
    assert not by_kind(docs, "NetworkPolicy")
