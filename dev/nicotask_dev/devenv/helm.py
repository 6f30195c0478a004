"""helm, built once from its Go module (helm.sh/helm/v3) and cached by version.

Like kube-apiserver and etcd (gobuild.py) the binary lives outside the
checkout, in ``~/.cache/nicotask/helm-<version>/helm``, so fresh clones
reuse it. ``python -m nicotask_dev.devenv.helm`` builds it when absent and prints
its path (for the Makefile and shell scripts).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from nicotask_dev.devenv.gobuild import cache_root, go_install_cached

HELM_VERSION = "v3.22.0"
HELM_PACKAGE = "helm.sh/helm/v3/cmd/helm"


def helm_path(version: str = HELM_VERSION) -> Path:
    return cache_root() / f"helm-{version}" / "helm"


def _ldflags(go: str, version: str, env: dict[str, str]) -> str:
    """The ldflags of helm's own Makefile: version, and the Kubernetes version that
    `helm template`/`helm lint` assume (client-go v0.X.Y -> 1.X), which a bare
    `go install` would leave at v1.20."""
    proc = subprocess.run(
        [go, "mod", "download", "-json", f"helm.sh/helm/v3@{version}"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"go mod download helm.sh/helm/v3@{version} failed:\n{proc.stderr}")
    gomod = Path(json.loads(proc.stdout)["GoMod"]).read_text()
    m = re.search(r"^\s*k8s\.io/client-go v(\d+)\.(\d+)\.", gomod, re.M)
    if m is None:
        raise RuntimeError("cannot find k8s.io/client-go in helm's go.mod")
    major, minor = int(m.group(1)) + 1, m.group(2)
    flags = ["-s", "-w", f"-X helm.sh/helm/v3/internal/version.version={version}"]
    for pkg in ("helm.sh/helm/v3/pkg/lint/rules", "helm.sh/helm/v3/pkg/chartutil"):
        flags += [f"-X {pkg}.k8sVersionMajor={major}", f"-X {pkg}.k8sVersionMinor={minor}"]
    return " ".join(flags)


def ensure_helm(version: str = HELM_VERSION) -> Path:
    """Return the cached helm binary, building it with `go install` when absent."""
    override = os.environ.get("NICOTASK_HELM")
    if override:
        return Path(override)

    def ldflags(go: str, env: dict[str, str]) -> str:
        return _ldflags(go, version, env)

    return go_install_cached("helm", HELM_PACKAGE, version, helm_path(version), ldflags)


# --------------------------------------------------------------------------
# The configuration table of docs/deploy.md, generated from values.yaml
# --------------------------------------------------------------------------

CHART_DIR = Path(__file__).resolve().parents[3] / "charts" / "nicotask"
TABLE_BEGIN = (
    "<!-- BEGIN GENERATED VALUES TABLE (python -m nicotask_dev.devenv.helm --values-table) -->"
)
TABLE_END = "<!-- END GENERATED VALUES TABLE -->"
_KEY_LINE = re.compile(r"^(\s*)([A-Za-z0-9_.-]+):(.*)$")


def documented_values(text: str) -> list[tuple[str, str]]:
    """(dotted key, description) for every key preceded by a `# -- text` comment."""
    out: list[tuple[str, str]] = []
    stack: list[tuple[int, str]] = []
    pending: str | None = None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("# --"):
            pending = stripped[4:].strip()
            continue
        if stripped.startswith("#") or not stripped or stripped.startswith("- "):
            continue
        m = _KEY_LINE.match(line)
        if not m:
            continue
        indent, key = len(m.group(1)), m.group(2)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = ".".join([k for _, k in stack] + [key])
        if pending is not None:
            out.append((path, pending))
            pending = None
        stack.append((indent, key))
    return out


def values_table(values_file: Path | None = None) -> str:
    """A Markdown table: key, default, description, for each documented key of values.yaml."""
    import yaml

    path = values_file or CHART_DIR / "values.yaml"
    text = path.read_text()
    data = yaml.safe_load(text)
    rows = ["| Key | Default | Description |", "|---|---|---|"]
    for key, desc in documented_values(text):
        node: object = data
        for part in key.split("."):
            assert isinstance(node, dict), key
            node = node[part]
        default = json.dumps(node, separators=(",", ":"))
        rows.append(f"| `{key}` | `{default}` | {desc.replace('|', chr(92) + '|')} |")
    return "\n".join(rows) + "\n"


def values_block(values_file: Path | None = None) -> str:
    return f"{TABLE_BEGIN}\n\n{values_table(values_file)}\n{TABLE_END}"


def main_cli(argv: list[str]) -> int:
    """`python -m nicotask_dev.devenv.helm` prints helm's path (building it when absent);
    `--values-table` prints the configuration table; `--write-docs FILE` refreshes it there."""
    if argv[:1] == ["--values-table"]:
        print(values_table(), end="")
        return 0
    if argv[:1] == ["--write-docs"] and len(argv) == 2:
        doc = Path(argv[1])
        current = doc.read_text()
        start, end = current.find(TABLE_BEGIN), current.find(TABLE_END)
        if start == -1 or end == -1:
            print(f"{doc}: no generated-table markers", file=sys.stderr)
            return 1
        doc.write_text(current[:start] + values_block() + current[end + len(TABLE_END) :])
        return 0
    print(ensure_helm())
    return 0


def main() -> None:
    sys.exit(main_cli(sys.argv[1:]))


if __name__ == "__main__":
    main()
