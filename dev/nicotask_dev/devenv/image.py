"""Build the nicotask image with podman from the repository's Dockerfile, cached by content.

No container registry is reachable here, so the Dockerfile's Python base is a
local image: Debian bookworm's python3.11, bootstrapped with mmdebstrap and
imported into podman. The nicotask image is tagged with a hash of everything
that goes into it (Dockerfile, .dockerignore, the lock files requirements/build.txt
and runtime.txt, pyproject.toml, README.md, operator/, the base), so an unchanged
tree is never rebuilt.

    python -m nicotask_dev.devenv.image          # build when needed, print the tag
    python -m nicotask_dev.devenv.image --tag    # print the tag the tree would get

pip inside the build uses the host's pip CA bundle (`cert` of `pip config
list`, passed as a build secret) and index settings (PIP_INDEX_URL /
PIP_EXTRA_INDEX_URL as build arguments), so it reaches the same registry
mirror as the host.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from .gobuild import cache_root

REPO = Path(__file__).resolve().parents[3]
IMAGE_REPOSITORY = "localhost/nicotask"
BASE_REPOSITORY = "localhost/nicotask-python"
DEBIAN_SUITE = "bookworm"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
BASE_PACKAGES = (
    "python3.11",
    "python3.11-venv",
    "python3-pip",
    "python-is-python3",
    "ca-certificates",
)
APT_PACKAGES = ("podman", "runc", "mmdebstrap")
# crun (podman's default) fails on cgroup v1 hybrid hosts; without explicit
# ulimits podman's setrlimit is refused in this kind of sandbox.
PODMAN_RUN_FLAGS = (
    "--runtime",
    "runc",
    "--ulimit",
    "nofile=4096:4096",
    "--ulimit",
    "nproc=4096:4096",
)
# What the Dockerfile copies (see .dockerignore): the tag hashes exactly these.
BUILD_INPUTS = (
    "Dockerfile",
    ".dockerignore",
    "requirements/build.txt",
    "requirements/runtime.txt",
    "pyproject.toml",
    "README.md",
    "operator",
)


def _log(msg: str) -> None:
    print(f"[nicotask image] {msg}", file=sys.stderr, flush=True)


def _run(args: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    proc: subprocess.CompletedProcess[str] = subprocess.run(  # type: ignore[call-overload]
        args, capture_output=True, text=True, check=False, **kw
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(args[:4])} ... failed ({proc.returncode}):\n"
            f"{(proc.stdout + proc.stderr)[-4000:]}"
        )
    return proc


def ensure_tools(
    commands: tuple[str, ...] = ("podman", "runc", "mmdebstrap"),
    packages: tuple[str, ...] = APT_PACKAGES,
) -> None:
    """Install the Debian packages providing `commands` when one is missing (root only)."""
    if all(shutil.which(c) for c in commands):
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise RuntimeError(
            f"missing {', '.join(c for c in commands if not shutil.which(c))}: "
            f"run `apt-get install {' '.join(packages)}` as root"
        )
    _log(f"apt-get install {' '.join(packages)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    _run(["apt-get", "update", "-q"], env=env)
    _run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages], env=env)


def podman(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    if check:
        return _run(["podman", *args])
    return subprocess.run(["podman", *args], capture_output=True, text=True, check=False)


def image_exists(ref: str) -> bool:
    return podman("image", "exists", ref, check=False).returncode == 0


def base_tag() -> str:
    digest = hashlib.sha256(
        " ".join([DEBIAN_SUITE, DEBIAN_MIRROR, *BASE_PACKAGES]).encode()
    ).hexdigest()[:12]
    return f"{BASE_REPOSITORY}:{DEBIAN_SUITE}-{digest}"


def ensure_base() -> str:
    """The Debian python3.11 base image, bootstrapped once (about a minute)."""
    tag = base_tag()
    if image_exists(tag):
        return tag
    out = cache_root() / "image"
    out.mkdir(parents=True, exist_ok=True)
    tar = out / f"{tag.rsplit(':', 1)[1]}.tar"
    if not tar.exists():
        _log(f"mmdebstrap {DEBIAN_SUITE} minbase + {', '.join(BASE_PACKAGES)}")
        partial = tar.with_name(f"{tar.stem}.partial.tar")
        _run(
            [
                "mmdebstrap",
                "--variant=minbase",
                "--format=tar",
                f"--include={','.join(BASE_PACKAGES)}",
                "--quiet",
                DEBIAN_SUITE,
                str(partial),
                DEBIAN_MIRROR,
            ],
            stdin=subprocess.DEVNULL,
        )
        partial.rename(tar)
    _log(f"podman import {tar.name} -> {tag}")
    podman("import", "--change", "ENV LANG=C.UTF-8", str(tar), tag)
    return tag


def content_tag(repo: Path = REPO, base: str | None = None) -> str:
    """`localhost/nicotask:<hash>` of the build inputs (and the base image's name)."""
    h = hashlib.sha256((base or base_tag()).encode())
    for name in BUILD_INPUTS:
        root = repo / name
        files = (
            [root]
            if root.is_file()
            else sorted(
                p
                for p in root.rglob("*")
                if p.is_file()
                and "__pycache__" not in p.parts
                and not p.name.endswith(".pyc")
                and not any(part.endswith(".egg-info") for part in p.parts)
            )
        )
        for f in files:
            h.update(str(f.relative_to(repo)).encode() + b"\0")
            h.update(f.read_bytes() + b"\0")
    return f"{IMAGE_REPOSITORY}:{h.hexdigest()[:16]}"


def pip_cert() -> str | None:
    """The CA bundle pip uses on this host (`pip config list` `cert`, or PIP_CERT)."""
    if os.environ.get("PIP_CERT"):
        return os.environ["PIP_CERT"]
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, check=False
    )
    for line in proc.stdout.splitlines():
        key, _, value = line.partition("=")
        if key.endswith(".cert") and value:
            return value.strip().strip("'\"")
    return None


def pip_index_args() -> list[str]:
    """The host's index settings as build arguments (empty when pip uses PyPI)."""
    out: list[str] = []
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, check=False
    )
    conf = {}
    for line in proc.stdout.splitlines():
        key, _, value = line.partition("=")
        conf[key.rsplit(".", 1)[-1]] = value.strip().strip("'\"")
    for var, key in (("PIP_INDEX_URL", "index-url"), ("PIP_EXTRA_INDEX_URL", "extra-index-url")):
        setting = os.environ.get(var) or conf.get(key)
        if setting:
            out += ["--build-arg", f"{var}={setting}"]
    return out


def build(repo: Path = REPO, force: bool = False) -> str:
    """Build the image unless its content tag exists; return the tag."""
    ensure_tools()
    base = ensure_base()
    tag = content_tag(repo, base)
    if image_exists(tag) and not force:
        _log(f"{tag} is up to date")
        return tag
    args = [
        "build",
        *PODMAN_RUN_FLAGS,
        "--network",
        "host",
        "--layers",
        "--build-arg",
        f"PYTHON_IMAGE={base}",
        *pip_index_args(),
        "-t",
        tag,
    ]
    cert_file = pip_cert()
    if cert_file and Path(cert_file).is_file():
        args += ["--secret", f"id=pip-cert,src={cert_file}"]
    _log(f"podman build -> {tag}")
    started = time.monotonic()
    _run(["podman", *args, str(repo)])
    podman("tag", tag, f"{IMAGE_REPOSITORY}:latest")
    _log(f"built {tag} in {time.monotonic() - started:.0f}s")
    return tag


def save(tag: str, dest: Path, *more: str) -> Path:
    """`podman save` as a docker-archive (what `ctr images import` reads); with `more`
    tags, one archive holding every image, their shared layers stored once."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    multi = ["--multi-image-archive"] if more else []
    podman("save", "--format", "docker-archive", *multi, "-o", str(dest), tag, *more)
    return dest


def main_cli(argv: list[str]) -> int:
    if argv[:1] == ["--tag"]:
        print(content_tag())
        return 0
    try:
        print(build(force="--force" in argv))
    except RuntimeError as exc:
        print(f"nicotask image build failed: {exc}", file=sys.stderr)
        return 1
    return 0


def main() -> None:
    sys.exit(main_cli(sys.argv[1:]))


if __name__ == "__main__":
    main()
