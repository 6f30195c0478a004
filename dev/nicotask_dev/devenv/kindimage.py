"""An offline kind node image, built with podman from Debian packages and Go modules.

`kind build node-image` drives the docker CLI and pulls etcd, CoreDNS, pause and
kindnetd from registries, so on a machine without them the project assembles
the node image itself, the way kind's images/base Dockerfile does:

  rootfs       Debian bookworm (mmdebstrap): systemd, containerd 1.6, runc, CNI
               plugins, iptables, conntrack ... and kind's own entrypoint, systemd
               units and sysctls (images/base/files of the kind module)
  Kubernetes   kubeadm, kubelet, kubectl at kubeset.VERSION (/usr/bin), /kind/version
  images       kube-apiserver, kube-controller-manager, kube-scheduler, kube-proxy,
               etcd, CoreDNS and pause, tagged as `kubeadm config images list` names
               them (etcd: the dev env's etcd, named by ETCD_IMAGE_TAG, which the kind
               config passes to kubeadm); saved under /kind/images and imported into
               containerd by a unit that runs before the kubelet
  network      no kindnetd (it does not build from the module proxy): a static CNI
               config (ptp + host-local, like kindnetd's) for a one-node cluster,
               so the cluster is created with `networking.disableDefaultCNI: true`;
               NetworkPolicies are enforced by kube-router's policy controller, whose
               image is here too and whose DaemonSet hack/kind-e2e.sh applies
               (kindnetpol)

The image is tagged with a hash of its inputs and rebuilt only when they change.

    python -m nicotask_dev.devenv.kindimage            # build when needed, print the tag
    python -m nicotask_dev.devenv.kindimage --config   # the kind config for it (YAML)
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from . import gobuild, image, kindcomponents, kubeset
from .kindtool import KIND_VERSION

NODE_REPOSITORY = "localhost/nicotask-kind-node"
ROOTFS_REPOSITORY = "localhost/nicotask-kind-rootfs"
POD_SUBNET = "10.244.0.0/24"  # the first node's podCIDR of kind's default 10.244.0.0/16
ROOTFS_PACKAGES = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "containerd",
    "runc",
    "containernetworking-plugins",
    "iptables",
    "ipset",  # kube-router's policy controller (kindnetpol)
    "nftables",
    "conntrack",
    "iproute2",
    "ethtool",
    "util-linux",
    "mount",
    "kmod",
    "libseccomp2",
    "pigz",
    "bash",
    "ca-certificates",
    "procps",
    "socat",
)
IMPORT_UNIT = "nicotask-images.service"


def _log(msg: str) -> None:
    print(f"[nicotask kind] {msg}", file=sys.stderr, flush=True)


def kind_module_dir() -> Path:
    """kind's source from the Go module cache (its images/base/files)."""
    proc = subprocess.run(
        [gobuild.go_command(), "mod", "download", "-json", f"sigs.k8s.io/kind@{KIND_VERSION}"],
        capture_output=True,
        text=True,
        check=False,
        env=gobuild.build_env(),
        cwd="/",
    )
    if proc.returncode != 0:
        raise RuntimeError(f"go mod download sigs.k8s.io/kind: {proc.stderr.strip()}")
    return Path(json.loads(proc.stdout)["Dir"])


def ensure_rootfs() -> str:
    """The Debian rootfs image (mmdebstrap, cached as a tar like the app image's base)."""
    digest = hashlib.sha256(
        " ".join([image.DEBIAN_SUITE, image.DEBIAN_MIRROR, *ROOTFS_PACKAGES]).encode()
    ).hexdigest()[:12]
    tag = f"{ROOTFS_REPOSITORY}:{image.DEBIAN_SUITE}-{digest}"
    if image.image_exists(tag):
        return tag
    out = gobuild.cache_root() / "image"
    out.mkdir(parents=True, exist_ok=True)
    tar = out / f"kind-rootfs-{digest}.tar"
    if not tar.exists():
        _log(f"mmdebstrap {image.DEBIAN_SUITE} + {', '.join(ROOTFS_PACKAGES)}")
        partial = tar.with_name(f"{tar.stem}.partial.tar")
        image._run(
            [
                "mmdebstrap",
                "--variant=minbase",
                "--format=tar",
                f"--include={','.join(ROOTFS_PACKAGES)}",
                "--quiet",
                image.DEBIAN_SUITE,
                str(partial),
                image.DEBIAN_MIRROR,
            ],
            stdin=subprocess.DEVNULL,
        )
        partial.rename(tar)
    image.podman("import", str(tar), tag)
    return tag


def containerd_config() -> str:
    """kind's containerd config for containerd 1.6 (no fuse-overlayfs, no product-files
    hook) with the sandbox image kubeadm names and Debian's CNI plugin folder."""
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    return f"""# offline kind node (nicotask kindimage.py): kind's config, containerd 1.6
version = 2
[{cri}]
  sandbox_image = "{kindcomponents.PAUSE_IMAGE}"
  tolerate_missing_hugepages_controller = true
  # a negative oom_score_adj is refused where the host withholds CAP_SYS_RESOURCE
  restrict_oom_score_adj = true
[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"
[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
[{cri}.containerd.runtimes.runc.options]
  SystemdCgroup = true
[{cri}.cni]
  bin_dir = "/usr/lib/cni"
  conf_dir = "/etc/cni/net.d"
"""


def cni_config() -> dict[str, object]:
    """kindnetd's CNI config, static: point-to-point veths (every packet crosses the
    node's iptables, so kube-proxy's Service rules apply between pods of one node)."""
    return {
        "cniVersion": "0.4.0",
        "name": "nicotask-kind",
        "plugins": [
            {
                "type": "ptp",
                "ipMasq": True,
                "mtu": 1500,
                "ipam": {
                    "type": "host-local",
                    "dataDir": "/run/cni-ipam-state",
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "ranges": [[{"subnet": POD_SUBNET}]],
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


IMPORT_UNIT_TEXT = """[Unit]
Description=Import the node's component images into containerd (offline kind node)
After=containerd.service
Requires=containerd.service
Before=kubelet.service
ConditionPathExists=!/var/lib/nicotask-images-imported

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -euc 'for f in /kind/images/*.tar; do ctr -n k8s.io images import "$f"; done'
ExecStartPost=/bin/touch /var/lib/nicotask-images-imported

[Install]
WantedBy=multi-user.target
"""

KUBELET_DROPIN = """[Unit]
After=nicotask-images.service
Wants=nicotask-images.service
"""

# A negative OOMScoreAdjust needs CAP_SYS_RESOURCE, which some hosts withhold.
CONTAINERD_DROPIN = """[Service]
OOMScoreAdjust=0
"""

CONTAINERFILE = """FROM {rootfs}
COPY files/usr/local/bin/ /usr/local/bin/
COPY files/kind/ /kind/
COPY files/etc/sysctl.d/ /etc/sysctl.d/
COPY files/etc/systemd/system/ /etc/systemd/system/
COPY files/etc/default/kubelet /etc/default/kubelet
COPY files/etc/crictl.yaml /etc/crictl.yaml
COPY containerd.toml /etc/containerd/config.toml
COPY 10-nicotask-kind.conflist /etc/cni/net.d/10-nicotask-kind.conflist
COPY bin/ /usr/bin/
COPY images/ /kind/images/
RUN chmod 755 /usr/local/bin/* /kind/bin/* \\
    && ln -sf /usr/bin/containerd /usr/local/bin/containerd \\
    && rm -f /lib/systemd/system/sysinit.target.wants/systemd-tmpfiles-setup.service \\
    && cd /lib/systemd/system && rm -f multi-user.target.wants/* /etc/systemd/system/*.wants/* \\
       local-fs.target.wants/* sockets.target.wants/*udev* sockets.target.wants/*initctl* \\
       basic.target.wants/* && cd / \\
    && echo "ReadKMsg=no" >> /etc/systemd/journald.conf \\
    && systemctl enable kubelet.service containerd.service undo-mount-hacks.service {import_unit} \\
    && systemctl mask systemd-binfmt.service \\
    && mkdir -p /etc/kubernetes/manifests \\
    && echo {version} > /kind/version
ENV container=docker
STOPSIGNAL SIGRTMIN+3
ENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]
"""


def _context(ctx: Path, rootfs: str, images: dict[str, Path]) -> None:
    files = kind_module_dir() / "images" / "base" / "files"
    shutil.copytree(
        files, ctx / "files", ignore=shutil.ignore_patterns("containerd*"), dirs_exist_ok=True
    )
    # copytree keeps the module cache's read-only modes: make the copy writable
    for p in (ctx / "files").rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    units = ctx / "files" / "etc" / "systemd" / "system"
    shutil.copy(files / "etc" / "systemd" / "system" / "containerd.service", units)
    (units / IMPORT_UNIT).write_text(IMPORT_UNIT_TEXT)
    (units / "kubelet.service.d" / "12-nicotask.conf").write_text(KUBELET_DROPIN)
    (units / "containerd.service.d").mkdir(exist_ok=True)
    (units / "containerd.service.d" / "10-nicotask.conf").write_text(CONTAINERD_DROPIN)
    (ctx / "containerd.toml").write_text(containerd_config())
    (ctx / "10-nicotask-kind.conflist").write_text(json.dumps(cni_config(), indent=2))
    (ctx / "bin").mkdir()
    for name in ("kubeadm", "kubelet", "kubectl"):
        shutil.copy(kubeset.path(name), ctx / "bin" / name)
    (ctx / "images").mkdir()
    for name, archive in images.items():
        shutil.copy(archive, ctx / "images" / f"{name}.tar")
    (ctx / "Containerfile").write_text(
        CONTAINERFILE.format(rootfs=rootfs, import_unit=IMPORT_UNIT, version=kubeset.VERSION)
    )


def node_tag(rootfs: str, images: dict[str, Path]) -> str:
    h = hashlib.sha256(rootfs.encode() + KIND_VERSION.encode())
    for part in (
        containerd_config(),
        json.dumps(cni_config()),
        IMPORT_UNIT_TEXT,
        KUBELET_DROPIN,
        CONTAINERD_DROPIN,
        CONTAINERFILE,
    ):
        h.update(part.encode())
    for name in ("kubeadm", "kubelet", "kubectl"):
        h.update(name.encode() + str(kubeset.path(name).stat().st_size).encode())
    for name, archive in sorted(images.items()):
        h.update(name.encode() + archive.name.encode())
    return f"{NODE_REPOSITORY}:{kubeset.VERSION}-{h.hexdigest()[:12]}"


def build() -> str:
    """Build (when its inputs changed) and return the node image's tag."""
    image.ensure_tools()
    started = time.monotonic()
    kubeset.ensure_built()
    rootfs = ensure_rootfs()
    images = kindcomponents.ensure_archives()
    tag = node_tag(rootfs, images)
    if image.image_exists(tag):
        _log(f"{tag} is up to date")
        return tag
    with tempfile.TemporaryDirectory(prefix="nicotask-kind-node-") as tmp:
        ctx = Path(tmp)
        _context(ctx, rootfs, images)
        _log(f"podman build -> {tag}")
        image._run(["podman", "build", *image.PODMAN_RUN_FLAGS, "-t", tag, str(ctx)])
    image.podman("tag", tag, f"{NODE_REPOSITORY}:latest")
    _log(f"built {tag} in {time.monotonic() - started:.0f}s")
    return tag


def kind_config() -> dict[str, Any]:
    """The kind cluster config the offline node image needs: no kindnetd (the static CNI
    config is in the image), cgroup v1 allowed (kubelet and kubeadm >= 1.35 refuse it
    unless told), and the etcd image tag of the dev environment's etcd."""
    return {
        "kind": "Cluster",
        "apiVersion": "kind.x-k8s.io/v1alpha4",
        "networking": {"disableDefaultCNI": True},
        "nodes": [{"role": "control-plane"}],
        "kubeadmConfigPatches": [
            yaml.safe_dump(
                {
                    "kind": "KubeletConfiguration",
                    "failCgroupV1": False,
                    # a shared machine's disk: never evict or collect our images
                    "imageGCHighThresholdPercent": 100,
                    "evictionHard": {
                        "memory.available": "0%",
                        "nodefs.available": "0%",
                        "nodefs.inodesFree": "0%",
                        "imagefs.available": "0%",
                    },
                }
            ),
            yaml.safe_dump(
                {
                    "kind": "InitConfiguration",
                    "nodeRegistration": {"ignorePreflightErrors": ["SystemVerification"]},
                }
            ),
            yaml.safe_dump(
                {
                    "kind": "ClusterConfiguration",
                    "etcd": {"local": {"imageTag": kindcomponents.ETCD_IMAGE_TAG}},
                }
            ),
        ],
    }


def main() -> None:
    if sys.argv[1:] == ["--config"]:
        print(yaml.safe_dump(kind_config(), sort_keys=False), end="")
        return
    try:
        print(build())
    except RuntimeError as exc:
        print(f"nicotask kind node image build failed: {exc}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
