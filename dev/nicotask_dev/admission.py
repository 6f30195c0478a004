"""Who cancelled is not forgeable: a ValidatingAdmissionPolicy on NicoTasks.

The annotation `nico.dev/cancel-requested-by` says who asked for a cancel
(the operator copies it into status.cancelRequestedBy, the Events and the
Temporal terminate reason). The policy lets a request set or change it only
- to the requester's own username (request.userInfo.username), or
- when the requester is a delegate: the REST shim's ServiceAccount, which
  records the subject of the verified JWT.
Removing it, or leaving it as it was, is always allowed. `kubectl nico cancel`
sets it to the caller (SelfSubjectReview).

This module is the one definition: the local environment installs it
(`install_policy`), the chart's templates/admission-policy.yaml carries the
same expressions (tests/unit/test_admission_policy.py compares them).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from nicotask import api

POLICY_NAME = "nicotask-cancel-requested-by"
ANNOTATION = api.CANCEL_REQUESTED_BY
CHART_SHIM_USER = "system:serviceaccount:nicotask:nicotask-shim"  # deploy/rbac/shim.yaml


def _annotation(obj: str) -> str:
    return (
        f"{obj} != null && has({obj}.metadata.annotations) && "
        f"'{ANNOTATION}' in {obj}.metadata.annotations ? "
        f"{obj}.metadata.annotations['{ANNOTATION}'] : ''"
    )


VARIABLES = [
    {"name": "requestedBy", "expression": _annotation("object")},
    {"name": "previously", "expression": _annotation("oldObject")},
]
VALIDATION_EXPRESSION = (
    "variables.requestedBy == '' || variables.requestedBy == variables.previously || "
    "variables.requestedBy == request.userInfo.username || "
    "request.userInfo.username in variables.delegates"
)
MESSAGE_EXPRESSION = (
    f"'{ANNOTATION} may only be set to your own username (' + "
    "request.userInfo.username + '), not to ' + variables.requestedBy"
)


def delegates_variable(usernames: list[str]) -> dict[str, str]:
    return {"name": "delegates", "expression": json.dumps(sorted(set(usernames)))}


def policy(delegates: list[str]) -> list[dict[str, Any]]:
    """The ValidatingAdmissionPolicy and its Binding (cluster-wide)."""
    return [
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicy",
            "metadata": {"name": POLICY_NAME},
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": {
                    "resourceRules": [
                        {
                            "apiGroups": [api.GROUP],
                            "apiVersions": ["*"],
                            "operations": ["CREATE", "UPDATE"],
                            "resources": [api.TASKS],
                        }
                    ],
                },
                "variables": [*VARIABLES, delegates_variable(delegates)],
                "validations": [
                    {
                        "expression": VALIDATION_EXPRESSION,
                        "messageExpression": MESSAGE_EXPRESSION,
                        "reason": "Forbidden",
                    }
                ],
            },
        },
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": {"name": POLICY_NAME},
            "spec": {"policyName": POLICY_NAME, "validationActions": ["Deny"]},
        },
    ]


def install_policy(kubeconfig: Path, delegates: list[str], timeout: float = 60.0) -> None:
    """Apply the policy and binding (server-side, idempotent)."""
    from .crdgen import kubectl_binary

    docs = "".join(f"---\n{json.dumps(d)}\n" for d in policy(delegates))
    done = subprocess.run(
        [
            kubectl_binary(),
            "--kubeconfig",
            str(kubeconfig),
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager=nicotask-admission",
            "-f",
            "-",
        ],
        input=docs,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "KUBECONFIG": str(kubeconfig)},
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"kubectl apply of the admission policy failed: {done.stderr.strip()}")


def uninstall_policy(kubeconfig: Path, timeout: float = 60.0) -> None:
    from .crdgen import kubectl_binary

    for kind in ("validatingadmissionpolicybinding", "validatingadmissionpolicy"):
        subprocess.run(
            [
                kubectl_binary(),
                "--kubeconfig",
                str(kubeconfig),
                "delete",
                kind,
                POLICY_NAME,
                "--ignore-not-found",
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
