"""The served OpenAPI document: the contract's shape, generated from the pydantic models.

Component schemas come from `nicotask.api` (Task, TaskReportV1..., NICoAPIError)
through `models_json_schema`, then are shaped like contract/openapi.yaml: the
report status enum is named TaskReportV1Status, single-value literals become
the contract's enum components (TaskReportV1Version, NiCoApiErrorSource),
optional fields are plain types (only Task.ruleId is nullable), and the
`required` lists are the contract's. Paths are written here: the cancel
operation as in the contract (plus 401 and 503, which the shim also answers),
and the routes the contract does not describe.
"""

from __future__ import annotations

import copy
from typing import Any

from pydantic.json_schema import models_json_schema

from nicotask.api import NICoAPIError, Task

REF = "#/components/schemas/{model}"
RENAMES = {"ReportStatus": "TaskReportV1Status"}
LITERAL_ENUMS = {
    ("TaskReportV1", "version"): (
        "TaskReportV1Version",
        "Schema version of this report. Always `1` for `TaskReportV1`.",
    ),
    ("NICoAPIError", "source"): ("NiCoApiErrorSource", "Source of the error."),
}
NULLABLE = {("Task", "ruleId")}
REQUIRED: dict[str, list[str]] = {
    "Task": [],
    "NICoAPIError": [],
    "TaskReportV1": ["version", "stages"],
    "TaskReportV1Stage": ["number", "status", "steps"],
    "TaskReportV1Step": ["componentType", "status"],
}
DESCRIPTIONS = {
    "Task": "A task representing an asynchronous, site-scoped operation against rack, tray, "
    "or other site infrastructure.",
    "NICoAPIError": "Describes the error response from NVIDIA Infra Controller REST API",
    "TaskStatus": "Current state of the task.",
    "TaskReportV1Status": "Per-stage and per-step execution status.",
}

AUTH_DESCRIPTION = (
    "Bearer JWT: `Authorization: Bearer $JWT_BEARER_TOKEN`. Realm roles `<org>:<ROLE>`; "
    "cancel needs `<org>:PROVIDER_ADMIN` (or the legacy `NICO_`/`FORGE_` prefixed names)."
)


def _ref(name: str) -> dict[str, str]:
    return {"$ref": REF.format(model=name)}


def _rename_refs(node: Any) -> Any:
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                name = value.rsplit("/", 1)[-1]
                out[key] = REF.format(model=RENAMES.get(name, name))
            else:
                out[key] = _rename_refs(value)
        return out
    if isinstance(node, list):
        return [_rename_refs(v) for v in node]
    return node


def _clean(node: dict[str, Any]) -> dict[str, Any]:
    return {
        k: v
        for k, v in node.items()
        if k not in ("title", "default", "additionalProperties")
        and not k.startswith("x-kubernetes")
    }


def component_schemas() -> dict[str, Any]:
    """components.schemas of the served document, from the pydantic models."""
    _, generated = models_json_schema(
        [(Task, "serialization"), (NICoAPIError, "serialization")], ref_template=REF
    )
    defs = _rename_refs(generated["$defs"])
    out: dict[str, Any] = {}
    for raw_name, schema in defs.items():
        name = RENAMES.get(raw_name, raw_name)
        schema = _clean(schema)
        props = schema.get("properties")
        if isinstance(props, dict):
            new_props: dict[str, Any] = {}
            for prop, sub in props.items():
                sub = _clean(sub)
                if (name, prop) in LITERAL_ENUMS:
                    enum_name, description = LITERAL_ENUMS[(name, prop)]
                    out[enum_name] = {
                        "type": "string",
                        "enum": [sub["const"]],
                        "description": description,
                        "title": enum_name,
                    }
                    sub = {**_ref(enum_name), "description": description}
                elif name == "NICoAPIError" and prop == "data":
                    sub = {
                        "oneOf": [_ref("NiCoApiErrorData"), {"type": "null"}],
                        "description": "Additional data about the error",
                    }
                    out["NiCoApiErrorData"] = {
                        "type": "object",
                        "properties": {},
                        "description": "Additional data about the error",
                        "title": "NiCoApiErrorData",
                    }
                elif "anyOf" in sub:
                    options = [o for o in sub["anyOf"] if o != {"type": "null"}]
                    rest = {k: v for k, v in sub.items() if k != "anyOf"}
                    if len(options) == 1:
                        sub = {**_clean(options[0]), **rest}
                        if (name, prop) in NULLABLE and "type" in sub:
                            sub["type"] = [sub["type"], "null"]
                if "items" in sub:
                    sub["items"] = _clean(sub["items"])
                new_props[prop] = sub
            schema["properties"] = new_props
        if name in REQUIRED:
            if REQUIRED[name]:
                schema["required"] = list(REQUIRED[name])
            else:
                schema.pop("required", None)
        if name in DESCRIPTIONS:
            schema["description"] = DESCRIPTIONS[name]
        schema["title"] = name
        out[name] = schema
    return dict(sorted(out.items()))


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": _ref("NICoAPIError")}},
    }


ERRORS = {
    "400": _error("Error response when request data cannot be validated"),
    "401": _error("Error response when the authorization token is missing, invalid or expired"),
    "403": _error(
        "Error response when user is not authorized to call an endpoint or retrieve/modify objects"
    ),
    "404": _error("Error response when requested object is not found"),
    "503": _error("Error response when the task store (Kubernetes API) is unavailable"),
}


def _path_param(name: str, description: str, fmt: str | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    if fmt:
        schema["format"] = fmt
    return {
        "name": name,
        "in": "path",
        "description": description,
        "required": True,
        "schema": schema,
    }


def _query(name: str, description: str, schema: dict[str, Any], required: bool = False) -> dict:
    return {
        "name": name,
        "in": "query",
        "description": description,
        "required": required,
        "schema": schema,
    }


ORG = _path_param("org", "Name of the Org")
TASK_ID = _path_param("id", "UUID of the Task", "uuid")
AUTHORIZATION = {
    "name": "Authorization",
    "in": "header",
    "description": AUTH_DESCRIPTION,
    "required": True,
    "schema": {"type": "string"},
}
SITE_QUERY = _query(
    "siteId", "ID of the Site that owns the task", {"type": "string", "format": "uuid"}, True
)

CANCEL_DESCRIPTION = (
    "Cancel a Task.\n\nThe same handler is also mounted at "
    "`/v2/org/{org}/nico/rack/task/{id}/cancel` for backward compatibility; prefer this path "
    "for new clients.\n\nCancellation is best-effort and idempotent: tasks in non-terminal "
    "states (`Pending`, `Running`, `Waiting`) are marked `Terminated` and any underlying "
    "Temporal workflow is terminated. Cancelling an already-`Terminated` task returns the same "
    "task without changes. Tasks that have already finished (`Succeeded` or `Failed`) cannot "
    "be cancelled.\n\nTasks are site-scoped; `siteId` must be the Site where the task was "
    "created. Org must have an Infrastructure Provider entity. User must have authorization "
    "role with `PROVIDER_ADMIN` suffix."
)


def _cancel_op(operation_id: str) -> dict[str, Any]:
    return {
        "operationId": operation_id,
        "summary": "Cancel a Task",
        "description": CANCEL_DESCRIPTION,
        "tags": ["subpackage_task"],
        "parameters": [ORG, TASK_ID, AUTHORIZATION],
        "responses": {
            "202": {
                "description": "Accepted. The cancellation request was accepted and the Task's "
                "last known state is returned. Clients should `GET` the task to observe the "
                "final state.",
                "content": {"application/json": {"schema": _ref("Task")}},
            },
            **ERRORS,
        },
        "requestBody": {
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            "siteId": {
                                "type": "string",
                                "format": "uuid",
                                "description": "ID of the Site that owns the task "
                                "(tasks are site-scoped).",
                            }
                        },
                        "required": ["siteId"],
                    }
                }
            }
        },
    }


def _get_op(operation_id: str) -> dict[str, Any]:
    return {
        "operationId": operation_id,
        "summary": "Retrieve a Task",
        "description": "The task, with its report. Org membership suffices (no role needed).",
        "tags": ["subpackage_task"],
        "parameters": [ORG, TASK_ID, SITE_QUERY, AUTHORIZATION],
        "responses": {
            "200": {
                "description": "The task.",
                "content": {"application/json": {"schema": _ref("Task")}},
            },
            **ERRORS,
        },
    }


LIST_OP: dict[str, Any] = {
    "operationId": "get-all-rack-tasks",
    "summary": "Retrieve the Tasks of a Rack",
    "description": "Tasks of the rack (the NicoRack name) in the site, newest first. "
    "Reports only with includeReport=true. Paging info in the X-Pagination header.",
    "tags": ["subpackage_task"],
    "parameters": [
        ORG,
        _path_param("rackId", "Name of the Rack"),
        SITE_QUERY,
        _query("activeOnly", "Only tasks not finished", {"type": "boolean", "default": False}),
        _query(
            "includeReport", "Include each task's report", {"type": "boolean", "default": False}
        ),
        _query("pageNumber", "Page, from 1", {"type": "integer", "minimum": 1, "default": 1}),
        _query(
            "pageSize",
            "Tasks per page",
            {"type": "integer", "minimum": 1, "maximum": 100, "default": 20},
        ),
        AUTHORIZATION,
    ],
    "responses": {
        "200": {
            "description": "One page of tasks.",
            "headers": {
                "X-Pagination": {
                    "description": 'JSON: {"pageNumber": n, "pageSize": n, "total": n}',
                    "schema": {"type": "string"},
                }
            },
            "content": {"application/json": {"schema": {"type": "array", "items": _ref("Task")}}},
        },
        **ERRORS,
    },
}


def build_document(version: str = "1.0.0") -> dict[str, Any]:
    prefix = "/v2/org/{org}/nico"
    return copy.deepcopy(
        {
            "openapi": "3.1.0",
            "info": {"title": "NICo task API (nicotask shim)", "version": version},
            "paths": {
                f"{prefix}/task/{{id}}/cancel": {"post": _cancel_op("cancel-task")},
                f"{prefix}/rack/task/{{id}}/cancel": {"post": _cancel_op("cancel-rack-task")},
                f"{prefix}/task/{{id}}": {"get": _get_op("get-task")},
                f"{prefix}/rack/task/{{id}}": {"get": _get_op("get-rack-task")},
                f"{prefix}/rack/{{rackId}}/task": {"get": LIST_OP},
            },
            "components": {
                "schemas": component_schemas(),
                "securitySchemes": {
                    "JWTBearerToken": {
                        "type": "http",
                        "scheme": "bearer",
                        "description": AUTH_DESCRIPTION,
                    }
                },
            },
        }
    )
