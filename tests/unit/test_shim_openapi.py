"""The served OpenAPI document matches contract/openapi.yaml for the cancel route."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from nicotask.shim.app import create_app
from nicotask.shim.config import ShimSettings

CONTRACT = Path(__file__).resolve().parents[2] / "contract" / "openapi.yaml"
CANCEL = "/v2/org/{org}/nico/task/{id}/cancel"
RACK_CANCEL = "/v2/org/{org}/nico/rack/task/{id}/cancel"
EXTRA_CODES = {"401", "503"}  # the shim also answers these; the contract does not list them


@pytest.fixture(scope="module")
def contract() -> dict[str, Any]:
    return yaml.safe_load(CONTRACT.read_text())


@pytest.fixture(scope="module")
def served() -> dict[str, Any]:
    return create_app(ShimSettings()).openapi()


def _deref(doc: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = doc["components"]["schemas"][node["$ref"].rsplit("/", 1)[-1]]
    return node


def _types(node: dict[str, Any]) -> set[str]:
    t = node.get("type")
    return set(t) if isinstance(t, list) else ({t} if t else set())


def normalize(doc: dict[str, Any], node: dict[str, Any], seen: frozenset[str] = frozenset()) -> Any:
    """The comparable part of a schema: refs, types, formats, enums, properties, required."""
    out: dict[str, Any] = {}
    if "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[-1]
        out["ref"] = name
        if name in seen:
            return out
        seen = seen | {name}
        node = doc["components"]["schemas"][name]
    out["types"] = sorted(_types(node))
    for key in ("format", "enum"):
        if key in node:
            out[key] = node[key]
    if "required" in node:
        out["required"] = sorted(node["required"])
    if "properties" in node:
        out["properties"] = {
            k: normalize(doc, v, seen) for k, v in sorted(node["properties"].items())
        }
    if "items" in node:
        out["items"] = normalize(doc, node["items"], seen)
    for key in ("oneOf", "anyOf"):
        if key in node:
            out[key] = [normalize(doc, v, seen) for v in node[key]]
    return out


def test_cancel_operation_matches_contract(
    contract: dict[str, Any], served: dict[str, Any]
) -> None:
    want = contract["paths"][CANCEL]["post"]
    for path in (CANCEL, RACK_CANCEL):
        got = served["paths"][path]["post"]

        # parameters: names, places, required, types and formats
        def params(op: dict[str, Any]) -> list[tuple[Any, ...]]:
            return sorted(
                (
                    p["name"],
                    p["in"],
                    p["required"],
                    p["schema"].get("type"),
                    p["schema"].get("format"),
                )
                for p in op["parameters"]
            )

        assert params(got) == params(want)
        # request body
        body = lambda op: op["requestBody"]["content"]["application/json"]["schema"]  # noqa: E731
        assert normalize(served, body(got)) == normalize(contract, body(want))
        # responses: every contract code, the same schema; extras only 401/503
        assert set(want["responses"]) <= set(got["responses"])
        assert set(got["responses"]) - set(want["responses"]) <= EXTRA_CODES
        for code, resp in want["responses"].items():
            w = resp["content"]["application/json"]["schema"]
            g = got["responses"][code]["content"]["application/json"]["schema"]
            assert normalize(served, g) == normalize(contract, w), code
    assert served["paths"][CANCEL]["post"]["operationId"] == want["operationId"]


def test_every_contract_component_schema_matches(
    contract: dict[str, Any], served: dict[str, Any]
) -> None:
    for name in contract["components"]["schemas"]:
        ref = {"$ref": f"#/components/schemas/{name}"}
        assert normalize(served, ref) == normalize(contract, ref), name
    assert served["components"]["securitySchemes"]["JWTBearerToken"]["scheme"] == "bearer"


def test_other_routes_documented(served: dict[str, Any]) -> None:
    paths = served["paths"]
    assert "get" in paths["/v2/org/{org}/nico/task/{id}"]
    assert "get" in paths["/v2/org/{org}/nico/rack/task/{id}"]
    listing = paths["/v2/org/{org}/nico/rack/{rackId}/task"]["get"]
    assert "X-Pagination" in listing["responses"]["200"]["headers"]
    names = {p["name"] for p in listing["parameters"]}
    assert {"siteId", "activeOnly", "includeReport", "pageNumber", "pageSize"} <= names


def test_served_document_is_valid_openapi(served: dict[str, Any]) -> None:
    import schemathesis

    schema = schemathesis.openapi.from_dict(served)
    ops = [r.ok() for r in schema.get_all_operations()]  # type: ignore[union-attr]
    assert len(ops) == 5
