"""A real node for the local control plane: kubelet, containerd and a CNI bridge.

`nicotask dev up --with-node` (or `start_node(env)` after `DevEnv(...,
with_node=True).up()`) adds to a DevEnv:

  kube-controller-manager, kube-scheduler,  gobuild.KUBERNETES_VERSION (v1.35.4), the
  kubelet                                   kube-apiserver's release: the newest kubelet
                                            that still speaks to containerd 1.x and runs
                                            on cgroup v1
  containerd                                Debian's 1.6 (apt), own socket and root

Networking (one node per machine): a bridge `nicotask0` with 10.244.0.1/24 is
the node's address and the pods' gateway (CNI `bridge` + `host-local` from
Debian's containernetworking-plugins). Pods reach the host's loopback
services through two NAT rules on that bridge only, so nothing listens
beyond loopback and the bridge:

  10.0.0.1:443 (the `kubernetes` Service)  -> 127.0.0.1:<kube-apiserver port>
  10.244.0.1:<port>                        -> 127.0.0.1:<port> (Temporal, BMC emulator)

There is no kube-proxy and no DNS: in-cluster clients use the `kubernetes`
Service IP (what the kubelet puts in KUBERNETES_SERVICE_HOST) and other
addresses by IP. The host reaches pods at their pod IPs (10.244.0.0/24).

Images never come from a registry: `import_image` loads a `podman save`
archive into containerd, and the sandbox ("pause") image is the Debian base
image with `sleep infinity` (containerd stops sandboxes with SIGKILL).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from . import gobuild, image, kube, ports
from .env import DevEnv
from .pki import Pki, cert_pem, ensure_pki, issue, key_pem
from .process import log

NODE_NAME = "nicotask-node"
BRIDGE = "nicotask0"
POD_CIDR = "10.244.0.0/24"
NODE_IP = "10.244.0.1"
KUBERNETES_SERVICE_IP = "10.0.0.1"  # first IP of kube.SERVICE_CLUSTER_IP_RANGE
NAT_CHAIN = "NICOTASK-NODE"
CNI_BIN_DIR = Path("/usr/lib/cni")
APT_PACKAGES = ("containerd", "runc", "containernetworking-plugins", "iptables")
PAUSE_REPOSITORY = "localhost/nicotask-pause"
CONTAINERD_NAMESPACE = "k8s.io"


def kubelet() -> gobuild.GoBinary:
    return gobuild.kubernetes_binary("kubelet")


def control_plane_binaries() -> list[gobuild.GoBinary]:
    return [
        gobuild.kubernetes_binary("kube-controller-manager"),
        gobuild.kubernetes_binary("kube-scheduler"),
    ]


def build_all() -> None:
    for binary in (*control_plane_binaries(), kubelet()):
        gobuild.ensure_built(binary)


def ensure_packages() -> None:
    image.ensure_tools(("containerd", "ctr", "runc", "iptables"), APT_PACKAGES)
    if not (CNI_BIN_DIR / "bridge").exists():
        image.ensure_tools(("__cni_bridge__",), ("containernetworking-plugins",))


def _sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(args, capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc


class NodePaths:
    """Where the node keeps its files: the run folder, plus a short socket folder
    under /run (unix socket paths are limited to 108 bytes)."""

    def __init__(self, run_dir: Path) -> None:
        self.dir = run_dir / "node"
        digest = hashlib.sha256(str(run_dir).encode()).hexdigest()[:10]
        self.state = Path("/run/nicotask") / digest
        self.socket = self.state / "containerd.sock"
        self.containerd_root = self.dir / "containerd"
        self.containerd_config = self.dir / "containerd.toml"
        self.cni_conf_dir = self.dir / "cni" / "net.d"
        self.cni_ipam_dir = self.dir / "cni" / "ipam"
        self.kubelet_dir = self.dir / "kubelet"
        self.kubelet_config = self.dir / "kubelet.yaml"
        self.kubelet_kubeconfig = self.dir / "kubelet.kubeconfig"
        self.images = self.dir / "images"


# ---- configuration files ---------------------------------------------------------


def containerd_config(paths: NodePaths, sandbox_image: str) -> str:
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    return f"""# written by nicotask dev (node.py); regenerated on every start
version = 2
root = "{paths.containerd_root}"
state = "{paths.state / "state"}"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
                    "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]
[grpc]
  address = "{paths.socket}"
[ttrpc]
  address = "{paths.socket}.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{paths.containerd_root / "opt"}"
[{cri}]
  sandbox_image = "{sandbox_image}"
  enable_selinux = false
  # The sandbox's oom_score_adj of -998 is refused here (no CAP_SYS_RESOURCE): clamp it.
  restrict_oom_score_adj = true
[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"
[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
[{cri}.containerd.runtimes.runc.options]
  BinaryName = "{shutil.which("runc") or "/usr/sbin/runc"}"
  SystemdCgroup = false
[{cri}.cni]
  bin_dir = "{CNI_BIN_DIR}"
  conf_dir = "{paths.cni_conf_dir}"
"""


def cni_config(paths: NodePaths) -> dict[str, Any]:
    return {
        "cniVersion": "0.4.0",
        "name": "nicotask",
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": True,
                "ipMasq": False,  # pods talk to this host and each other only
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": POD_CIDR, "gateway": NODE_IP}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(paths.cni_ipam_dir),
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def kubelet_config(paths: NodePaths, pki: Pki, port: int, healthz_port: int) -> dict[str, Any]:
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        # This host has cgroup v1 (hybrid); kubelet >= 1.35 refuses it unless told.
        "failCgroupV1": False,
        "cgroupDriver": "cgroupfs",
        "containerRuntimeEndpoint": f"unix://{paths.socket}",
        "address": NODE_IP,
        "port": port,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": healthz_port,
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": False},
            "x509": {"clientCAFile": str(pki.ca_cert)},
        },
        # Only kube-apiserver (admin client certificate) talks to this kubelet.
        "authorization": {"mode": "AlwaysAllow"},
        "podCIDR": POD_CIDR,
        "maxPods": 30,
        "failSwapOn": False,
        "resolvConf": "/etc/resolv.conf",
        "serializeImagePulls": False,
        "nodeStatusUpdateFrequency": "5s",
        "syncFrequency": "10s",
        # A shared development machine: never evict or garbage-collect our images.
        "evictionHard": {
            "memory.available": "0%",
            "nodefs.available": "0%",
            "imagefs.available": "0%",
            "nodefs.inodesFree": "0%",
        },
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "localStorageCapacityIsolation": False,
        "cgroupsPerQOS": False,
        "enforceNodeAllocatable": [],
        "staticPodPath": "",
        "podLogsDir": str(paths.dir / "pod-logs"),
        "shutdownGracePeriod": "0s",
    }


def node_kubeconfig(paths: NodePaths, pki: Pki, api_url: str) -> Path:
    """A client certificate for system:node:<name> (the Node authorizer's identity)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    ca_cert = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    ca_key = serialization.load_pem_private_key(pki.ca_key.read_bytes(), password=None)
    cert, key = issue(
        ca_cert,
        ca_key,  # type: ignore[arg-type]
        f"system:node:{NODE_NAME}",
        organizations=("system:nodes",),
        client=True,
    )
    cfg = kube.kubeconfig_dict(api_url, pki.ca_cert.read_bytes(), cert_pem(cert), key_pem(key))
    paths.kubelet_kubeconfig.write_text(yaml.safe_dump(cfg, sort_keys=False))
    paths.kubelet_kubeconfig.chmod(0o600)
    return paths.kubelet_kubeconfig


# ---- host networking ---------------------------------------------------------------


def _bridge_exists() -> bool:
    return _sh("ip", "link", "show", BRIDGE, check=False).returncode == 0


OWNER_FILE = Path("/run/nicotask/node-owner")


def claim_node(run_dir: Path) -> None:
    """One node per machine (fixed bridge and subnet): refuse while another run folder's
    kubelet lives; take over what a dead one left behind."""
    from .process import ProcessRecord, record_alive

    if OWNER_FILE.exists():
        owner = Path(OWNER_FILE.read_text().strip())
        if owner != run_dir:
            try:
                procs = json.loads((owner / "state.json").read_text()).get("processes", [])
            except (OSError, ValueError):
                procs = []
            if any(
                p["name"] == "kubelet" and record_alive(ProcessRecord.from_json(p)) for p in procs
            ):
                raise RuntimeError(
                    f"a node already runs for {owner}; stop it first: "
                    f"nicotask dev down --run-dir {owner}"
                )
            teardown_node(owner)
    OWNER_FILE.parent.mkdir(parents=True, exist_ok=True)
    OWNER_FILE.write_text(f"{run_dir}\n")


def setup_network(api_port: int) -> None:
    """The bridge (node address and pod gateway) and the NAT rules into loopback."""
    if _bridge_exists():
        teardown_network()
    _sh("ip", "link", "add", BRIDGE, "type", "bridge")
    _sh("ip", "addr", "add", f"{NODE_IP}/24", "dev", BRIDGE)
    _sh("ip", "link", "set", BRIDGE, "up")
    # DNAT to 127.0.0.1 is only routed when the incoming interface allows it.
    Path(f"/proc/sys/net/ipv4/conf/{BRIDGE}/route_localnet").write_text("1\n")
    _sh("iptables", "-t", "nat", "-N", NAT_CHAIN)
    _sh(
        "iptables",
        "-t",
        "nat",
        "-A",
        NAT_CHAIN,
        "-d",
        f"{KUBERNETES_SERVICE_IP}/32",
        "-p",
        "tcp",
        "--dport",
        "443",
        "-j",
        "DNAT",
        "--to-destination",
        f"127.0.0.1:{api_port}",
    )
    _sh(
        "iptables",
        "-t",
        "nat",
        "-A",
        NAT_CHAIN,
        "-d",
        f"{NODE_IP}/32",
        "-p",
        "tcp",
        "-j",
        "DNAT",
        "--to-destination",
        "127.0.0.1",
    )
    _sh("iptables", "-t", "nat", "-I", "PREROUTING", "-i", BRIDGE, "-j", NAT_CHAIN)


def teardown_network() -> None:
    _sh("iptables", "-t", "nat", "-D", "PREROUTING", "-i", BRIDGE, "-j", NAT_CHAIN, check=False)
    _sh("iptables", "-t", "nat", "-F", NAT_CHAIN, check=False)
    _sh("iptables", "-t", "nat", "-X", NAT_CHAIN, check=False)
    if _bridge_exists():
        _sh("ip", "link", "del", BRIDGE, check=False)


# ---- images --------------------------------------------------------------------------


def ctr(paths: NodePaths, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return _sh(
        "ctr", "--address", str(paths.socket), "-n", CONTAINERD_NAMESPACE, *args, check=check
    )


def pause_image() -> str:
    """The sandbox image: the Debian base with `sleep infinity`, built once with podman."""
    base = image.ensure_base()
    tag = f"{PAUSE_REPOSITORY}:{base.rsplit(':', 1)[1]}"
    if image.image_exists(tag):
        return tag
    with contextlib.ExitStack() as stack:
        import tempfile

        ctx = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        (ctx / "Containerfile").write_text(f'FROM {base}\nENTRYPOINT ["/bin/sleep", "infinity"]\n')
        image.podman("build", *image.PODMAN_RUN_FLAGS, "-t", tag, str(ctx))
    return tag


def import_image(paths: NodePaths, tag: str) -> None:
    """Load a podman image into containerd's k8s.io namespace (unless it is there)."""
    have = ctr(paths, "images", "ls", "-q").stdout.split()
    if tag in have:
        return
    archive = paths.images / (tag.replace("/", "_").replace(":", "_") + ".tar")
    image.save(tag, archive)
    ctr(paths, "images", "import", str(archive))
    archive.unlink()


# ---- processes --------------------------------------------------------------------


def _node_ready(kubeconfig: Path) -> bool:
    proc = _sh(
        _kubectl(),
        "--kubeconfig",
        str(kubeconfig),
        "get",
        "node",
        NODE_NAME,
        "-o",
        "jsonpath={.status.conditions[?(@.type=='Ready')].status}",
        check=False,
    )
    return proc.stdout.strip() == "True"


def _kubectl() -> str:
    from nicotask_dev.crdgen import kubectl_binary

    return kubectl_binary()


def _ctr_ready(paths: NodePaths) -> bool:
    return ctr(paths, "version", check=False).returncode == 0


def start_node(env: DevEnv, images: tuple[str, ...] = ()) -> dict[str, Any]:
    """Start controller-manager, scheduler, containerd and kubelet on an up DevEnv
    (created with `with_node=True`); import `images` (podman tags). Returns the state."""
    state = env.load_state()
    if not state.get("with_node"):
        raise RuntimeError("the environment was not started with a node (DevEnv(with_node=True))")
    if os.geteuid() != 0:
        raise RuntimeError("a node needs root (containerd, kubelet, a bridge and NAT rules)")
    ensure_packages()
    gobuild.ensure_built(kubelet())
    paths = NodePaths(env.run_dir)
    pki = ensure_pki(env.run_dir / "pki")
    admin_kubeconfig = Path(state["kubeconfig"])
    api_port = state["ports"]["apiserver"]
    p = ports.pick_ports(["kubelet", "kubelet_healthz", "scheduler", "controller_manager"])

    claim_node(env.run_dir)
    setup_network(api_port)
    for d in (
        paths.dir,
        paths.state,
        paths.cni_conf_dir,
        paths.cni_ipam_dir,
        paths.kubelet_dir,
        paths.images,
    ):
        d.mkdir(parents=True, exist_ok=True)
    sandbox = pause_image()
    paths.containerd_config.write_text(containerd_config(paths, sandbox))
    (paths.cni_conf_dir / "10-nicotask.conflist").write_text(
        json.dumps(cni_config(paths), indent=2)
    )
    env.start_process(
        "containerd",
        ["containerd", "--config", str(paths.containerd_config)],
        ready_check=lambda: _ctr_ready(paths),
        timeout=60,
    )
    for tag in (sandbox, *images):
        import_image(paths, tag)

    node_kubeconfig(paths, pki, state["api_url"])
    paths.kubelet_config.write_text(
        yaml.safe_dump(
            kubelet_config(paths, pki, p["kubelet"], p["kubelet_healthz"]), sort_keys=False
        )
    )
    env.start_process(
        "kubelet",
        [
            str(gobuild.ensure_built(kubelet())),
            f"--config={paths.kubelet_config}",
            f"--kubeconfig={paths.kubelet_kubeconfig}",
            f"--root-dir={paths.kubelet_dir}",
            f"--cert-dir={paths.kubelet_dir / 'pki'}",
            f"--hostname-override={NODE_NAME}",
            f"--node-ip={NODE_IP}",
            "--v=1",
        ],
        ready_check=lambda: _node_ready(admin_kubeconfig),
        timeout=120,
    )
    # The kubelet registers on its own; the controllers and the scheduler make Deployments
    # into pods on it.
    ccm, sched = (gobuild.ensure_built(b) for b in control_plane_binaries())
    env.start_process(
        "kube-controller-manager",
        [
            str(ccm),
            f"--kubeconfig={admin_kubeconfig}",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            f"--secure-port={p['controller_manager']}",
            f"--service-account-private-key-file={pki.sa_key}",
            f"--root-ca-file={pki.ca_cert}",
            f"--cluster-signing-cert-file={pki.ca_cert}",
            f"--cluster-signing-key-file={pki.ca_key}",
            "--use-service-account-credentials=false",
            "--v=1",
        ],
        ready_check=lambda: kube.http_ok(
            f"https://127.0.0.1:{p['controller_manager']}/healthz", _insecure()
        ),
        timeout=60,
    )
    env.start_process(
        "kube-scheduler",
        [
            str(sched),
            f"--kubeconfig={admin_kubeconfig}",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            f"--secure-port={p['scheduler']}",
            "--v=1",
        ],
        ready_check=lambda: kube.http_ok(
            f"https://127.0.0.1:{p['scheduler']}/healthz", _insecure()
        ),
        timeout=60,
    )

    env.update_state(
        node={
            "name": NODE_NAME,
            "ip": NODE_IP,
            "pod_cidr": POD_CIDR,
            "containerd_socket": str(paths.socket),
        }
    )
    log(f"node {NODE_NAME} Ready ({NODE_IP}, pods in {POD_CIDR})")
    return env.load_state()


def _insecure() -> Any:
    import ssl

    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def teardown_node(run_dir: Path) -> None:
    """After kubelet and containerd stopped: kill what they leave behind (containerd
    shims and their containers), unmount the kubelet's volumes, remove the bridge
    and NAT rules. Harmless when there is nothing to do."""
    paths = NodePaths(run_dir)
    for pid_dir in Path("/proc").iterdir():
        if not pid_dir.name.isdigit():
            continue
        try:
            cmdline = (pid_dir / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if (
            cmdline
            and cmdline[0].endswith(b"containerd-shim-runc-v2")
            and (str(paths.socket).encode() in b" ".join(cmdline))
        ):
            with contextlib.suppress(OSError):
                os.killpg(int(pid_dir.name), 9)
            with contextlib.suppress(OSError):
                os.kill(int(pid_dir.name), 9)
    time.sleep(0.2)
    roots = (str(paths.dir), str(paths.state))
    mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
    for target in sorted((m for m in mounts if m.startswith(roots)), key=len, reverse=True):
        _sh("umount", "-l", target, check=False)
    teardown_network()
    shutil.rmtree(paths.state, ignore_errors=True)
    with contextlib.suppress(OSError):
        if Path(OWNER_FILE.read_text().strip()) == run_dir:
            OWNER_FILE.unlink()


def main_cli(argv: list[str]) -> int:
    if argv[:1] == ["--build"]:
        try:
            build_all()
        except RuntimeError as exc:
            print(f"nicotask node build failed: {exc}", file=sys.stderr)
            return 1
        return 0
    print("usage: python -m nicotask_dev.devenv.node --build", file=sys.stderr)
    return 2


def main() -> None:
    sys.exit(main_cli(sys.argv[1:]))


if __name__ == "__main__":
    main()
