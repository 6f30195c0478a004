"""`helm install` of the chart into the local control plane, and least-privilege RBAC:
`kubectl auth can-i` as each component's ServiceAccount shows exactly the rights it needs."""

from __future__ import annotations

import re
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nicotask_dev.crdgen import kubectl_binary
from nicotask_dev.devenv.helm import ensure_helm

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "nicotask"
TASKS = "nicotasks.nico.dev"


class Cluster:
    def __init__(self, kubeconfig: Path, home: Path) -> None:
        self.kubeconfig = kubeconfig
        self.helm_bin = str(ensure_helm())
        self.kubectl_bin = kubectl_binary()
        self.env = {
            "PATH": "/usr/bin:/bin",
            "HOME": str(home),
            "KUBECONFIG": str(kubeconfig),
            "HELM_CACHE_HOME": str(home / "cache"),
            "HELM_CONFIG_HOME": str(home / "config"),
            "HELM_DATA_HOME": str(home / "data"),
        }

    def helm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [self.helm_bin, "--kubeconfig", str(self.kubeconfig), *args],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=180,
            check=False,
        )
        if check:
            assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc

    def kubectl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.kubectl_bin, "--kubeconfig", str(self.kubeconfig), *args],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=60,
            check=False,
        )

    def can_i(
        self,
        sa: str,
        verb: str,
        resource: str,
        namespace: str | None = None,
        subresource: str | None = None,
    ) -> bool:
        args = ["auth", "can-i", verb, resource, f"--as={sa}"]
        args += ["-n", namespace] if namespace else []
        args += [f"--subresource={subresource}"] if subresource else []
        proc = self.kubectl(*args)
        answer = proc.stdout.strip()
        assert answer in ("yes", "no"), proc.stdout + proc.stderr
        return answer == "yes"

    def rights(self, sa: str, namespace: str) -> dict[str, set[str]]:
        """`kubectl auth can-i --list` as `sa` in `namespace`: resource -> verbs."""
        proc = self.kubectl("auth", "can-i", "--list", f"--as={sa}", "-n", namespace)
        assert proc.returncode == 0, proc.stderr
        out: dict[str, set[str]] = {}
        for line in proc.stdout.splitlines()[1:]:
            m = re.match(r"^(\S+)\s+\[[^\]]*\]\s+\[[^\]]*\]\s+\[([^\]]*)\]", line)
            if m:
                out.setdefault(m.group(1), set()).update(m.group(2).split())
        return out


# Rights every authenticated ServiceAccount has by default (discovery, self-reviews).
_DEFAULT = {
    "selfsubjectreviews.authentication.k8s.io",
    "selfsubjectaccessreviews.authorization.k8s.io",
    "selfsubjectrulesreviews.authorization.k8s.io",
    "clustertrustbundles.certificates.k8s.io",  # readable by every identity since 1.33
}


def ours(rights: dict[str, set[str]]) -> dict[str, set[str]]:
    return {r: v for r, v in rights.items() if r not in _DEFAULT and not r.startswith("/")}


@pytest.fixture(scope="module")
def cluster(devenv: Any, tmp_path_factory: pytest.TempPathFactory) -> Cluster:
    return Cluster(devenv.kubeconfig, tmp_path_factory.mktemp("helm-home"))


@pytest.fixture
def release(cluster: Cluster) -> Iterator[list[tuple[str, str]]]:
    """Releases installed by a test, uninstalled afterwards (cluster-scoped RBAC goes too)."""
    installed: list[tuple[str, str]] = []
    yield installed
    for name, ns in installed:
        cluster.helm("uninstall", name, "-n", ns, check=False)


def test_install_cluster_wide_least_privilege(
    cluster: Cluster, namespace: str, release: list[tuple[str, str]]
) -> None:
    name = f"nt-{secrets.token_hex(3)}"
    installed = cluster.helm(
        "install",
        name,
        str(CHART),
        "-n",
        namespace,
        "--set",
        "temporal.address=temporal.example:7233",
    )
    release.append((name, namespace))
    # The defaults that need the site's values are named in the NOTES, each with its risk.
    notes = installed.stdout[installed.stdout.index("Hardening left to you") :]
    for setting in (
        "temporal.tls.enabled=false",
        "watchNamespaces is empty",
        "worker.bmcNetworks is empty",
        "networkPolicy.temporal.ingress.enabled=false",
    ):
        assert f"  - {setting}" in notes, notes
    listed = cluster.helm("list", "-n", namespace, "-o", "json").stdout
    assert f'"name":"{name}"' in listed and '"status":"deployed"' in listed
    # Accepted server-side: every object exists.
    for kind, obj in [
        ("deployment", f"{name}-nicotask-operator"),
        ("deployment", f"{name}-nicotask-worker"),
        ("deployment", f"{name}-nicotask-shim"),
        ("service", f"{name}-nicotask-shim"),
        ("poddisruptionbudget", f"{name}-nicotask-worker"),
        ("crd", TASKS),
        ("crd", "clusterkopfpeerings.kopf.dev"),
    ]:
        got = cluster.kubectl("get", kind, obj, "-n", namespace, "-o", "name")
        assert got.returncode == 0, got.stderr

    def sa(component: str) -> str:
        return f"system:serviceaccount:{namespace}:{name}-nicotask-{component}"

    elsewhere = "default"  # cluster-wide install: rights hold in any namespace
    operator, worker, shim = sa("operator"), sa("worker"), sa("shim")
    for ns in (namespace, elsewhere):
        assert ours(cluster.rights(operator, ns)) == {
            TASKS: {"get", "list", "watch", "delete"},
            f"{TASKS}/status": {"get", "patch", "update"},
            "nicoracks.nico.dev": {"get", "list", "watch"},
            "nicooperationrules.nico.dev": {"get", "list", "watch"},
            "nicoproviders.nico.dev": {"get", "list", "watch"},
            "nicosites.nico.dev": {"get", "list", "watch"},
            "events": {"create", "patch"},
            "events.events.k8s.io": {"create", "patch"},
            "customresourcedefinitions.apiextensions.k8s.io": {"get", "list", "watch"},
            "namespaces": {"list", "watch"},
        }
        assert ours(cluster.rights(worker, ns)) == {
            TASKS: {"get"},
            "nicoracks.nico.dev": {"get"},
            "nicooperationrules.nico.dev": {"list"},
            f"{TASKS}/status": {"get", "update", "patch"},
            "secrets": {"get"},
            "events": {"create"},
        }
        assert ours(cluster.rights(shim, ns)) == {
            TASKS: {"get", "list", "watch", "patch"},
            "nicoproviders.nico.dev": {"get", "list", "watch"},
            "nicosites.nico.dev": {"get", "list", "watch"},
        }
    # Targeted checks: what each one needs ...
    assert cluster.can_i(operator, "update", TASKS, elsewhere, subresource="status")
    assert cluster.can_i(operator, "list", "customresourcedefinitions")
    assert cluster.can_i(worker, "get", "secrets", elsewhere)
    assert cluster.can_i(worker, "patch", TASKS, elsewhere, subresource="status")
    assert cluster.can_i(shim, "patch", TASKS, elsewhere)
    assert cluster.can_i(shim, "list", "nicosites.nico.dev")
    # ... and dangerous or unneeded rights they do not have.
    for who in (operator, shim):
        for verb in ("get", "list", "watch"):
            assert not cluster.can_i(who, verb, "secrets", namespace)
    for who in (worker, shim):
        assert not cluster.can_i(who, "create", TASKS, namespace)
        assert not cluster.can_i(who, "delete", TASKS, namespace)
    assert not cluster.can_i(worker, "patch", TASKS, namespace)  # no spec writes
    assert not cluster.can_i(worker, "update", TASKS, namespace)
    assert not cluster.can_i(worker, "list", "secrets", namespace)
    assert not cluster.can_i(shim, "patch", TASKS, namespace, subresource="status")
    assert not cluster.can_i(operator, "create", TASKS, namespace)
    assert not cluster.can_i(operator, "patch", TASKS, namespace)  # writes no spec or metadata
    # The operator deletes finished tasks past ttlSecondsAfterFinished; it never updates them.
    assert cluster.can_i(operator, "delete", TASKS, namespace)
    assert not cluster.can_i(operator, "update", TASKS, namespace)
    assert not cluster.can_i(operator, "patch", "nicoracks.nico.dev", namespace)
    assert not cluster.can_i(operator, "patch", "clusterkopfpeerings.kopf.dev")  # no peering
    for who in (operator, worker, shim):
        assert not cluster.can_i(who, "create", "pods", namespace)
        assert not cluster.can_i(who, "*", "*")
        assert not cluster.can_i(who, "create", "clusterrolebindings")
        assert not cluster.can_i(who, "impersonate", "serviceaccounts", namespace)


def test_install_namespaced_with_peering(
    cluster: Cluster, namespace: str, release: list[tuple[str, str]]
) -> None:
    watched = [f"w-{secrets.token_hex(3)}" for _ in range(2)]
    for ns in watched:
        assert cluster.kubectl("create", "namespace", ns).returncode == 0
    name = f"nt-{secrets.token_hex(3)}"
    try:
        installed = cluster.helm(
            "install",
            name,
            str(CHART),
            "-n",
            namespace,
            "-f",
            str(CHART / "ci" / "all-features-values.yaml"),
            # No Prometheus Operator CRDs here.
            "--set",
            "serviceMonitor.enabled=false",
            "--set",
            "podMonitor.enabled=false",
            "--set",
            "prometheusRule.enabled=false",
            "--set-json",
            f"watchNamespaces={list(watched)!r}".replace("'", '"'),
        )
        release.append((name, namespace))
        # Hardened here but for the frontend policy (Temporal's namespace is not ours).
        notes = installed.stdout[installed.stdout.index("Hardening left to you") :]
        assert [ln for ln in notes.splitlines() if ln.startswith("  - ")] == [
            "  - networkPolicy.temporal.ingress.enabled=false: anything that reaches the"
            " Temporal frontend can start and stop tasks"
        ], notes
        operator = f"system:serviceaccount:{namespace}:{name}-nicotask-operator"
        worker = f"system:serviceaccount:{namespace}:{name}-nicotask-worker"
        shim = f"system:serviceaccount:{namespace}:{name}-nicotask-shim"
        for ns in watched:
            got = cluster.kubectl("get", "kopfpeering", "nicotask-site-a", "-n", ns)
            assert got.returncode == 0, got.stderr
            assert cluster.can_i(operator, "patch", "kopfpeerings.kopf.dev", ns)
            assert cluster.can_i(operator, "watch", TASKS, ns)
            assert cluster.can_i(worker, "get", "secrets", ns)
            assert cluster.can_i(shim, "patch", TASKS, ns)
        # Nothing outside the watched namespaces (the release's own included).
        for who in (operator, worker, shim):
            assert not cluster.can_i(who, "get", TASKS, "default")
            assert not cluster.can_i(who, "get", TASKS, namespace)
        assert not cluster.can_i(worker, "get", "secrets", "default")
        assert not cluster.can_i(operator, "patch", "kopfpeerings.kopf.dev", "default")
        assert not cluster.can_i(operator, "patch", "clusterkopfpeerings.kopf.dev")
        # Cluster-scoped reads stay.
        assert cluster.can_i(operator, "list", "nicosites.nico.dev")
        assert cluster.can_i(shim, "list", "nicoproviders.nico.dev")
    finally:
        for ns in watched:
            cluster.kubectl("delete", "namespace", ns, "--wait=false")


def test_editor_and_viewer_roles_for_people(
    cluster: Cluster, namespace: str, release: list[tuple[str, str]]
) -> None:
    """People bound to <fullname>-editor create and cancel NicoTasks; -admin also writes racks,
    rules, providers and sites; -viewer only reads. (Aggregation into admin/edit/view needs
    kube-controller-manager, which this control plane does not run: the aggregation labels
    are checked by the render tests.)"""
    name = f"nt-{secrets.token_hex(3)}"
    cluster.helm(
        "install",
        name,
        str(CHART),
        "-n",
        namespace,
        "--set",
        "temporal.address=temporal.example:7233",
    )
    release.append((name, namespace))
    for role, user in (("editor", "alice"), ("viewer", "bob")):
        got = cluster.kubectl(
            "create",
            "rolebinding",
            f"{name}-{user}",
            "-n",
            namespace,
            f"--clusterrole={name}-nicotask-{role}",
            f"--user={user}",
        )
        assert got.returncode == 0, got.stderr
    # carol administers racks and rules here, dave the cluster-scoped providers and sites too.
    got = cluster.kubectl(
        "create",
        "rolebinding",
        f"{name}-carol",
        "-n",
        namespace,
        f"--clusterrole={name}-nicotask-admin",
        "--user=carol",
    )
    assert got.returncode == 0, got.stderr
    got = cluster.kubectl(
        "create",
        "clusterrolebinding",
        f"{name}-dave",
        f"--clusterrole={name}-nicotask-admin",
        "--user=dave",
    )
    assert got.returncode == 0, got.stderr
    try:
        for verb in ("create", "patch", "update", "delete", "get", "list", "watch"):
            for resource in (TASKS, "nicoracks.nico.dev", "nicooperationrules.nico.dev"):
                assert cluster.can_i("carol", verb, resource, namespace)
            for resource in ("nicoproviders.nico.dev", "nicosites.nico.dev"):
                assert cluster.can_i("dave", verb, resource)
                assert not cluster.can_i("carol", verb, resource)
        for who in ("carol", "dave"):
            assert not cluster.can_i(who, "patch", TASKS, namespace, subresource="status")
            assert not cluster.can_i(who, "get", "secrets", namespace)
        assert not cluster.can_i("carol", "patch", "nicoracks.nico.dev", "default")
    finally:
        cluster.kubectl("delete", "clusterrolebinding", f"{name}-dave")
    for verb in ("create", "get", "list", "watch", "patch", "delete"):
        assert cluster.can_i("alice", verb, TASKS, namespace)
    for verb in ("get", "list", "watch"):
        for resource in (TASKS, "nicoracks.nico.dev", "nicooperationrules.nico.dev"):
            assert cluster.can_i("bob", verb, resource, namespace)
            assert cluster.can_i("alice", verb, resource, namespace)
    assert cluster.can_i("bob", "get", TASKS, namespace, subresource="status")
    # Nothing more: no writes for the viewer, no status/rack/rule writes or secrets for the
    # editor, nothing outside the namespace of the binding.
    for verb in ("create", "patch", "update", "delete"):
        assert not cluster.can_i("bob", verb, TASKS, namespace)
    assert not cluster.can_i("alice", "patch", TASKS, namespace, subresource="status")
    assert not cluster.can_i("alice", "patch", "nicoracks.nico.dev", namespace)
    assert not cluster.can_i("alice", "create", "nicooperationrules.nico.dev", namespace)
    for who in ("alice", "bob"):
        assert not cluster.can_i(who, "get", "secrets", namespace)
        assert not cluster.can_i(who, "get", TASKS, "default")
