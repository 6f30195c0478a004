"""The nicotask processes (operator, worker, shim) on top of a DevEnv.

`start_system` installs the CRDs, starts the three processes as managed
processes of the run folder (so `dev down` stops them too), and applies the
samples with the rack's BMC endpoint pointed at the emulator.
"""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from . import ports
from .env import DevEnv
from .process import log

REPO = Path(__file__).resolve().parents[3]
SAMPLES = REPO / "samples"
SAMPLES_NAMESPACE = "default"
KUBECTL = str(Path(sys.executable).parent / "kubectl")


def _http_ok(url: str) -> Any:
    def check() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    return check


def system_environ(env: DevEnv, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a nicotask process pointed at this DevEnv."""
    out = {**os.environ, **env.exports()}
    out.setdefault("NICOTASK_RECONCILE_INTERVAL_SECONDS", "10")
    # The emulated BMCs listen on loopback, which the worker refuses unless listed.
    out.setdefault("NICOTASK_WORKER_BMC_NETWORKS", '["127.0.0.0/8"]')
    out["PYTHONUNBUFFERED"] = "1"
    # The worker's sandbox re-imports the workflow module for every new run: with
    # no bytecode cached that is a compile each time (~3.5 ms). The image
    # compiles everything at build time; here Python writes it on first import.
    out.pop("PYTHONDONTWRITEBYTECODE", None)
    if extra:
        out.update(extra)
    return out


def kubectl(env: DevEnv, *args: str, stdin: str | None = None) -> str:
    kubeconfig = env.exports()["KUBECONFIG"]
    proc = subprocess.run(
        [KUBECTL, "--kubeconfig", kubeconfig, *args],
        input=stdin,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)}: {proc.stderr.strip()}")
    return proc.stdout


def install_crds(env: DevEnv) -> None:
    """The CRDs generated from the models, applied and Established (crdgen does the work),
    and the admission policy that keeps `nico.dev/cancel-requested-by` honest. The local
    shim runs with the admin kubeconfig, so that user is its delegate here."""
    from nicotask_dev.admission import CHART_SHIM_USER, install_policy
    from nicotask_dev.crdgen import install_crds as apply_generated_crds
    from nicotask_dev.devenv.pki import ADMIN_USER

    kubeconfig = Path(env.exports()["KUBECONFIG"])
    apply_generated_crds(kubeconfig)
    install_policy(kubeconfig, delegates=[CHART_SHIM_USER, current_user(env) or ADMIN_USER])


def current_user(env: DevEnv) -> str | None:
    """Who the kubeconfig authenticates as (`kubectl auth whoami`): on an existing cluster
    (kind's `kubernetes-admin`) that is not the dev PKI's admin user."""
    try:
        name = kubectl(env, "auth", "whoami", "-o", "jsonpath={.status.userInfo.username}")
    except RuntimeError:
        return None
    return name.strip() or None


def start_operator(env: DevEnv, name: str = "operator", **extra: str) -> None:
    _start_component(
        env, name, "operator", "NICOTASK_HEALTH_PORT", "NICOTASK_METRICS_PORT", "metrics", extra
    )


def start_worker(env: DevEnv, name: str = "worker", **extra: str) -> None:
    _start_component(
        env,
        name,
        "worker",
        "NICOTASK_WORKER_HEALTH_PORT",
        "NICOTASK_WORKER_METRICS_PORT",
        "health",
        extra,
    )


def _start_component(
    env: DevEnv,
    name: str,
    command: str,
    health_var: str,
    metrics_var: str,
    shown: str,
    extra: dict[str, str],
) -> None:
    """`nicotask <command>` on two free ports, ready once /healthz answers.

    `shown` is the URL the environment lists for it: its /metrics or its /healthz.
    """
    chosen = ports.pick_ports(["health", "metrics"])
    health, metrics = chosen["health"], chosen["metrics"]
    environ = system_environ(env, {health_var: str(health), metrics_var: str(metrics), **extra})
    urls = {
        "metrics": f"http://127.0.0.1:{metrics}/metrics",
        "health": f"http://127.0.0.1:{health}/healthz",
    }
    env.start_process(
        name,
        [sys.executable, "-m", "nicotask", command],
        env=environ,
        ready_check=_http_ok(urls["health"]),
        url=urls[shown],
        extra={"health_port": health, "metrics_port": metrics},
    )


def start_shim(env: DevEnv, **extra: str) -> str:
    from nicotask_dev.shim.devissuer import write_issuers_file

    port = ports.pick_ports(["shim"])["shim"]
    url = f"http://127.0.0.1:{port}"
    environ = system_environ(
        env,
        {
            "NICOTASK_SHIM_HOST": "127.0.0.1",
            "NICOTASK_SHIM_PORT": str(port),
            # Trust the dev issuer whose key lives in the run folder (`nicotask dev token`).
            "NICOTASK_SHIM_ISSUERS_FILE": str(write_issuers_file(env.run_dir)),
            **extra,
        },
    )
    rec = env.start_process(
        "shim",
        [sys.executable, "-m", "nicotask", "shim"],
        env=environ,
        ready_check=_http_ok(f"{url}/readyz"),  # its caches have synced
        url=url,
    )
    env.update_state(shim_url=rec.url)
    return rec.url


def sample_documents(redfish_url: str) -> list[dict[str, Any]]:
    """The samples, with every BMC endpoint pointed at the local emulator."""
    docs: list[dict[str, Any]] = []
    for path in sorted(SAMPLES.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc:
                continue
            if doc.get("kind") == "NicoRack":
                for comp in doc["spec"].get("components", []):
                    comp["redfish"]["endpoint"] = redfish_url
            docs.append(doc)
    return docs


def apply_samples(env: DevEnv) -> None:
    redfish_url = env.exports()["NICOTASK_REDFISH_URL"]
    docs = sample_documents(redfish_url)
    # The task last: everything it references exists before the operator sees it.
    docs.sort(key=lambda d: d.get("kind") == "NicoTask")
    # The samples name no namespace: they go where they are applied.
    kubectl(env, "apply", "-n", SAMPLES_NAMESPACE, "-f", "-", stdin=yaml.safe_dump_all(docs))


def start_system(env: DevEnv, with_samples: bool = True) -> None:
    log("installing CRDs")
    install_crds(env)
    start_worker(env)
    start_operator(env)
    start_shim(env)
    if with_samples:
        log("applying samples/")
        apply_samples(env)


GRACEFUL_PATCH = (
    '{"spec":{"cancel":true,"cancelMode":"Graceful","cancelReason":"trying a graceful stop"}}'
)


def usage(env: DevEnv) -> str:
    """The exact commands to watch, cancel and inspect the sample task."""
    run_dir = env.run_dir
    venv_bin = Path(sys.executable).parent
    return f"""
The sample task `power-on-rack-1` (namespace {SAMPLES_NAMESPACE}) is powering on rack-1's
ten emulated BMCs: shelves, switches, then compute trays, each tier given the
settle time a real rack needs (samples/rule-power-on.yaml), so it stays Running
for about three minutes. Cancel it while it runs.

  export PATH={venv_bin}:$PATH
  eval "$(nicotask dev env --run-dir {run_dir})"

  kubectl get nico                                   # every nicotask object
  kubectl get nicotask -w                            # watch status (Ctrl-C to stop)
  kubectl nico report power-on-rack-1                # stages and steps

Cancel it with kubectl:
  kubectl patch nicotask power-on-rack-1 --type merge -p '{{"spec":{{"cancel":true}}}}'

...or through the REST API (the NICo cancel endpoint on the shim):
  TOKEN=$(nicotask dev token --run-dir {run_dir} --org acme --role PROVIDER_ADMIN)
  ID=$(kubectl get nicotask power-on-rack-1 -o jsonpath='{{.metadata.uid}}')
  curl -s -X POST -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \\
    -d '{{"siteId":"660e8400-e29b-41d4-a716-446655440000"}}' \\
    "$NICOTASK_SHIM_URL/v2/org/acme/nico/task/$ID/cancel"

Read the final status and report:
  kubectl get nicotask power-on-rack-1 -o jsonpath='{{.status}}' | python3 -m json.tool
  curl -s -H "Authorization: Bearer $TOKEN" \\
    "$NICOTASK_SHIM_URL/v2/org/acme/nico/task/$ID?siteId=660e8400-e29b-41d4-a716-446655440000"

Start another (it runs as long, even with the BMCs already on; it waits while
power-on-rack-1 still runs, since a rack runs one task at a time):
  sed 's/name: power-on-rack-1/name: power-on-again/' {SAMPLES}/task-power-on.yaml \\
    | kubectl create -f -
  kubectl patch nicotask power-on-again --type merge -p '{{"spec":{{"cancel":true}}}}'

...or stop it gracefully: the running stage finishes, the later ones are skipped, and the
rule's cleanup forces off the compute trays this task powered on (docs/cancel.md):
  kubectl patch nicotask power-on-again --type merge -p '{GRACEFUL_PATCH}'
  kubectl nico report power-on-again                 # stages completed, skipped, cleanup
To make a graceful stop hard (never the other way):
  kubectl patch nicotask power-on-again --type merge -p '{{"spec":{{"cancelMode":"Terminate"}}}}'
Logs: {run_dir}/logs/{{operator,worker,shim,kube-apiserver,temporal,redfish}}.log
"""
