"""The kind CLI, `go install`ed once from the module proxy into ~/.cache/nicotask.

python -m nicotask_dev.devenv.kindtool     # build when needed, print the path
"""

from __future__ import annotations

import sys
from pathlib import Path

from . import gobuild

KIND_VERSION = "v0.33.0"
# kind's go.mod may ask for a newer Go than the machine's: the go command fetches this one.
GO_TOOLCHAIN = "go1.27.3"


def kind_binary() -> Path:
    path = gobuild.cache_root() / f"kind-{KIND_VERSION}" / "kind"
    return gobuild.go_install_cached(
        "kind", "sigs.k8s.io/kind", KIND_VERSION, path, toolchain=GO_TOOLCHAIN
    )


def main() -> None:
    try:
        print(kind_binary())
    except RuntimeError as exc:
        print(f"nicotask kind build failed: {exc}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
