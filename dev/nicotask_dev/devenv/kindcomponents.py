"""The container images kubeadm runs on the offline kind node, built from local binaries.

Each image holds one static binary (FROM scratch), except kube-proxy and
kube-router's policy controller (kindnetpol), which need iptables, conntrack and
ipset and so sit on the node's Debian rootfs (one archive holds both). The tags
are the names `kubeadm config images list` prints for kubeset.VERSION, so
kubeadm and the kubelet find them in containerd without pulling; etcd is the
dev environment's etcd (gobuild.ETCD_VERSION) under its own tag, which the kind
config hands to kubeadm (ClusterConfiguration etcd.local.imageTag).

`ensure_archives()` returns one `podman save` archive per image, cached in
~/.cache/nicotask/kind-images by the image's id.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from . import gobuild, image, kindnetpol, kubeset

REGISTRY = "registry.k8s.io"
COREDNS_VERSION = "v1.13.1"  # kubeadm v1.35's CoreDNSVersion
PAUSE_VERSION = "3.10.1"  # kubeadm v1.35's PauseVersion
PAUSE_IMAGE = f"{REGISTRY}/pause:{PAUSE_VERSION}"
ETCD_IMAGE_TAG = gobuild.ETCD_VERSION.lstrip("v") + "-0"

PAUSE_GO = """package main

import (
	"os"
	"os/signal"
	"syscall"
)

// The pod sandbox's process: wait for SIGINT or SIGTERM, then exit 0.
func main() {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	<-sigs
}
"""


def _log(msg: str) -> None:
    print(f"[nicotask kind] {msg}", file=sys.stderr, flush=True)


def coredns() -> Path:
    path = gobuild.cache_root() / f"coredns-{COREDNS_VERSION}" / "coredns"
    return gobuild.go_install_cached("coredns", "github.com/coredns/coredns", COREDNS_VERSION, path)


def pause() -> Path:
    path = gobuild.cache_root() / "pause-nicotask" / "pause"
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    src = path.parent / "src"
    src.mkdir(exist_ok=True)
    (src / "go.mod").write_text("module nicotask.local/pause\n\ngo 1.21\n")
    (src / "main.go").write_text(PAUSE_GO)
    proc = subprocess.run(
        [gobuild.go_command(), "build", "-trimpath", "-ldflags", "-s -w", "-o", str(path), "."],
        cwd=src,
        env=gobuild.build_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"go build pause: {proc.stderr.strip()}")
    return path


def binaries() -> dict[str, tuple[str, Path]]:
    """image name -> (tag, static binary) for the FROM-scratch images."""
    k = kubeset.VERSION
    return {
        "kube-apiserver": (f"{REGISTRY}/kube-apiserver:{k}", kubeset.path("kube-apiserver")),
        "kube-controller-manager": (
            f"{REGISTRY}/kube-controller-manager:{k}",
            kubeset.path("kube-controller-manager"),
        ),
        "kube-scheduler": (f"{REGISTRY}/kube-scheduler:{k}", kubeset.path("kube-scheduler")),
        "etcd": (f"{REGISTRY}/etcd:{ETCD_IMAGE_TAG}", gobuild.ensure_built(gobuild.etcd())),
        "coredns": (f"{REGISTRY}/coredns/coredns:{COREDNS_VERSION}", coredns()),
        "pause": (PAUSE_IMAGE, pause()),
    }


def _build(tag: str, containerfile: str, files: dict[str, Path]) -> None:
    with tempfile.TemporaryDirectory(prefix="nicotask-kind-img-") as tmp:
        ctx = Path(tmp)
        for name, src in files.items():
            shutil.copy(src, ctx / name)
        (ctx / "Containerfile").write_text(containerfile)
        image._run(["podman", "build", *image.PODMAN_RUN_FLAGS, "-t", tag, str(ctx)])


def scratch_containerfile(name: str) -> str:
    entry = f'ENTRYPOINT ["/usr/local/bin/{name}"]\n' if name in ("coredns", "pause") else ""
    return (
        f"FROM scratch\nCOPY {name} /usr/local/bin/{name}\n"
        "ENV PATH=/usr/local/bin:/usr/bin:/bin\n" + entry
    )


def kube_proxy_containerfile(rootfs: str) -> str:
    return f"FROM {rootfs}\nCOPY kube-proxy /usr/local/bin/kube-proxy\n"


def archive_key(image_ids: list[str]) -> str:
    """The cache key of an archive of these images (one id, or a hash of several)."""
    if len(image_ids) == 1:
        return image_ids[0][:16]
    return hashlib.sha256(" ".join(image_ids).encode()).hexdigest()[:16]


def _archive(name: str, tag: str, *more: str) -> Path:
    ids = [
        image.podman("image", "inspect", "--format", "{{.Id}}", t).stdout.strip()
        for t in (tag, *more)
    ]
    dest = gobuild.cache_root() / "kind-images" / f"{name}-{archive_key(ids)}.tar"
    if not dest.exists():
        partial = dest.with_suffix(".partial")
        image.save(tag, partial, *more)
        partial.rename(dest)
    return dest


def kubeadm_images() -> list[str]:
    """What kubeadm at kubeset.VERSION will run, with the kind config's etcd tag."""
    config = (
        f"apiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\n"
        f"kubernetesVersion: {kubeset.VERSION}\n"
        f"etcd:\n  local:\n    imageTag: {ETCD_IMAGE_TAG}\n"
    )
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
        f.write(config)
        f.flush()
        proc = subprocess.run(
            [str(kubeset.path("kubeadm")), "config", "images", "list", "--config", f.name],
            capture_output=True,
            text=True,
            check=False,
        )
    if proc.returncode != 0:
        raise RuntimeError(f"kubeadm config images list: {proc.stderr.strip()}")
    return proc.stdout.split()


def check_names(tags: list[str]) -> None:
    """Every image kubeadm names must be one of ours, or the node would try to pull."""
    missing = sorted(set(kubeadm_images()) - set(tags))
    if missing:
        raise RuntimeError(f"kubeadm wants images the node image does not have: {missing}")


def ensure_archives() -> dict[str, Path]:
    from .kindimage import ensure_rootfs

    kubeset.ensure_built()
    out: dict[str, Path] = {}
    for name, (tag, binary) in binaries().items():
        _build(tag, scratch_containerfile(name), {name: binary})
        out[name] = _archive(name, tag)
    tag = f"{REGISTRY}/kube-proxy:{kubeset.VERSION}"
    rootfs = ensure_rootfs()
    _build(tag, kube_proxy_containerfile(rootfs), {"kube-proxy": kubeset.path("kube-proxy")})
    policy = {"kube-router": kindnetpol.kube_router()}
    _build(kindnetpol.IMAGE, kindnetpol.containerfile(rootfs), policy)
    # Both sit on the Debian rootfs: one archive stores its layer once.
    out["kube-proxy-kube-router"] = _archive("kube-proxy-kube-router", tag, kindnetpol.IMAGE)
    check_names([t for t, _ in binaries().values()] + [tag])
    _log(f"component images: {', '.join(sorted(out))}")
    return out
