"""The generated CRDs against the real kube-apiserver.

The CRDs apply and become Established, every sample in samples/ is accepted,
and every invalid object (samples/invalid/*.yaml and the update cases below)
is refused with a message that names the field.

kubectl runs with `--validate=strict` (server-side `fieldValidation=Strict`),
which is what turns an unknown field under spec into an error instead of a
silent prune.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from nicotask_dev import crdgen

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "samples"
INVALID = sorted((SAMPLES / "invalid").glob("*.yaml"))
CLUSTER_KINDS = {k.kind for k in crdgen.KINDS if not k.namespaced}
SITE_ID = "660e8400-e29b-41d4-a716-446655440000"


@dataclass
class Result:
    rc: int
    out: str
    err: str


async def kubectl(kubeconfig: Path, *args: str, stdin: str | None = None) -> Result:
    proc = await asyncio.create_subprocess_exec(
        crdgen.kubectl_binary(),
        "--kubeconfig",
        str(kubeconfig),
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(
        proc.communicate(stdin.encode() if stdin is not None else None), timeout=60
    )
    assert proc.returncode is not None
    return Result(proc.returncode, out.decode(), err.decode())


@pytest.fixture(scope="session")
def crds_installed(devenv: Any) -> list[str]:
    """The CRDs generated from the models, applied once per session and Established."""
    return crdgen.install_crds(devenv.kubeconfig)


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _expectations(path: Path) -> list[str]:
    return re.findall(r"^# expect: (.+)$", path.read_text(), flags=re.MULTILINE)


def _task(name: str, **spec: Any) -> str:
    body = {
        "apiVersion": "nico.dev/v1alpha1",
        "kind": "NicoTask",
        "metadata": {"name": name},
        "spec": {"siteId": SITE_ID, "rackRef": "rack-1", "operation": "PowerOn", **spec},
    }
    return json.dumps(body)


async def test_crds_established(devenv: Any, crds_installed: list[str]) -> None:
    assert len(crds_installed) == len(crdgen.KINDS)
    for kind in crdgen.KINDS:
        res = await kubectl(devenv.kubeconfig, "get", "crd", kind.crd_name, "-o", "json")
        assert res.rc == 0, res.err
        crd = json.loads(res.out)
        conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
        assert conditions.get("Established") == "True", conditions
        assert conditions.get("NamesAccepted") == "True", conditions
        assert crd["status"]["acceptedNames"]["shortNames"] == list(kind.short_names)
        assert crd["status"]["acceptedNames"]["categories"] == [crdgen.CATEGORY]
    # installing again is a no-op
    assert crdgen.install_crds(devenv.kubeconfig) == crds_installed


async def test_samples_accepted(devenv: Any, crds_installed: list[str], namespace: str) -> None:
    samples = sorted(SAMPLES.glob("*.yaml"))
    assert samples, "no samples"
    docs = [doc for path in samples for doc in _docs(path)]
    kinds = {doc["kind"] for doc in docs}
    assert {"NicoTask", "NicoRack", "NicoOperationRule", "NicoProvider", "NicoSite"} <= kinds
    # Samples name no namespace, so the documented command works in any namespace.
    assert not [d["metadata"]["name"] for d in docs if "namespace" in d["metadata"]]
    apply = ["apply", "--validate=strict", "--server-side", "-n", namespace]
    # The whole folder, as documented (cluster-wide kinds included), checked by the server...
    res = await kubectl(devenv.kubeconfig, *apply, "--dry-run=server", "-f", str(SAMPLES))
    assert res.rc == 0, res.err
    assert res.out.count("serverside-applied (server dry run)") == len(docs), res.out
    # ...then the namespaced ones for real (cluster-wide ones would leak between tests).
    namespaced = [str(p) for p in samples if _docs(p)[0]["kind"] not in CLUSTER_KINDS]
    res = await kubectl(devenv.kubeconfig, *apply, *(a for p in namespaced for a in ("-f", p)))
    assert res.rc == 0, res.err
    res = await kubectl(devenv.kubeconfig, "get", "secret", "rack-1-bmc", "-n", namespace)
    assert res.rc == 0, res.err
    # `kubectl get nico` lists our kinds with their columns
    res = await kubectl(devenv.kubeconfig, "get", "nico", "-n", namespace)
    assert res.rc == 0, res.err
    assert "nicotask.nico.dev/power-on-rack-1" in res.out
    assert "nicorack.nico.dev/rack-1" in res.out
    assert "nicooperationrule.nico.dev/power-on-default" in res.out
    res = await kubectl(devenv.kubeconfig, "get", "nt", "-n", namespace)
    assert res.rc == 0, res.err
    header = res.out.splitlines()[0].split()
    assert header == ["NAME", "STATUS", "OPERATION", "RACK", "SITE", "MESSAGE", "AGE"]
    assert "PowerOn" in res.out and "rack-1" in res.out and SITE_ID in res.out
    # defaults applied by the API server
    res = await kubectl(
        devenv.kubeconfig, "get", "nt", "power-on-rack-1", "-n", namespace, "-o", "json"
    )
    assert json.loads(res.out)["spec"]["cancel"] is False
    # selectable fields
    for rack, names in (("rack-1", "nicotask.nico.dev/power-on-rack-1"), ("rack-2", "")):
        res = await kubectl(
            devenv.kubeconfig, "get", "nt", "-n", namespace,
            "--field-selector", f"spec.rackRef={rack}", "-o", "name",
        )  # fmt: skip
        assert res.rc == 0, res.err
        assert res.out.strip() == names


@pytest.mark.parametrize("path", INVALID, ids=[p.stem for p in INVALID])
async def test_invalid_sample_refused(
    devenv: Any, crds_installed: list[str], namespace: str, path: Path
) -> None:
    expect = _expectations(path)
    assert expect, f"{path.name} has no `# expect:` line"
    (doc,) = _docs(path)
    if doc["kind"] not in CLUSTER_KINDS:
        doc["metadata"]["namespace"] = namespace
    res = await kubectl(
        devenv.kubeconfig,
        "create",
        "--validate=strict",
        "--dry-run=server",
        "-f",
        "-",
        stdin=json.dumps(doc),
    )
    assert res.rc != 0, f"{path.name} was accepted: {res.out}"
    for text in expect:
        assert text in res.err, f"{path.name}: {text!r} not in {res.err!r}"


async def test_unknown_field_pruned_without_strict(
    devenv: Any, crds_installed: list[str], namespace: str
) -> None:
    """Documents why strict validation matters: without it the field is silently dropped."""
    body = json.loads(_task("pruned"))
    body["spec"]["force"] = True
    res = await kubectl(
        devenv.kubeconfig,
        "create",
        "--validate=ignore",
        "-n",
        namespace,
        "-o",
        "json",
        "-f",
        "-",
        stdin=json.dumps(body),
    )
    assert res.rc == 0, res.err
    assert "force" not in json.loads(res.out)["spec"]


@pytest.mark.parametrize(
    ("patch", "expect"),
    [
        ({"cancel": False}, ["spec.cancel", "spec.cancel cannot be set back to false"]),
        ({"siteId": "770e8400-e29b-41d4-a716-446655440000"}, ["spec.siteId is immutable"]),
        ({"rackRef": "rack-2"}, ["spec.rackRef is immutable"]),
        ({"operation": "PowerOff"}, ["spec.operation is immutable"]),
        ({"ruleId": "770e8400-e29b-41d4-a716-446655440001"}, ["spec.ruleId is immutable"]),
        ({"description": "changed"}, ["spec.description is immutable"]),
        ({"force": True}, ["spec.force", "field not declared in schema"]),
    ],
    ids=["uncancel", "siteId", "rackRef", "operation", "ruleId", "description", "unknown"],
)
async def test_invalid_update_refused(
    devenv: Any,
    crds_installed: list[str],
    namespace: str,
    patch: dict[str, Any],
    expect: list[str],
) -> None:
    """Updates as a GitOps tool makes them: server-side apply of the whole object."""
    apply = ("apply", "--server-side", "--force-conflicts", "--validate=strict", "-n", namespace)
    res = await kubectl(devenv.kubeconfig, *apply, "-f", "-", stdin=_task("t", cancel=True))
    assert res.rc == 0, res.err
    changed = json.loads(_task("t", cancel=True))
    changed["spec"].update(patch)
    res = await kubectl(devenv.kubeconfig, *apply, "-f", "-", stdin=json.dumps(changed))
    assert res.rc != 0, f"{patch} accepted: {res.out}"
    for text in expect:
        assert text in res.err, f"{text!r} not in {res.err!r}"


async def test_allowed_updates(devenv: Any, crds_installed: list[str], namespace: str) -> None:
    res = await kubectl(devenv.kubeconfig, "create", "-n", namespace, "-f", "-", stdin=_task("t"))
    assert res.rc == 0, res.err

    async def patch_spec(spec: dict[str, Any]) -> Any:
        merge = json.dumps({"spec": spec})
        return await kubectl(
            devenv.kubeconfig, "patch", "-n", namespace, "nt", "t", "--type=merge", "-p", merge
        )

    for patch in ({"cancel": True}, {"cancel": True}):
        res = await patch_spec(patch)
        assert res.rc == 0, res.err
    res = await patch_spec({"cancel": False})
    assert res.rc != 0
    assert "spec.cancel cannot be set back to false" in res.err, res.err


async def test_status_terminal_is_final(
    devenv: Any, crds_installed: list[str], namespace: str
) -> None:
    res = await kubectl(devenv.kubeconfig, "create", "-n", namespace, "-f", "-", stdin=_task("t"))
    assert res.rc == 0, res.err

    async def status_patch(status: dict[str, Any]) -> Result:
        return await kubectl(
            devenv.kubeconfig,
            "patch",
            "-n",
            namespace,
            "nt",
            "t",
            "--subresource=status",
            "--type=merge",
            "-p",
            json.dumps({"status": status}),
        )

    assert (await status_patch({"status": "Running", "message": "Running"})).rc == 0
    res = await status_patch(
        {
            "status": "Terminated",
            "message": "Cancelled by user",
            "report": {
                "version": "1",
                "stages": [
                    {
                        "number": 1,
                        "status": "failed",
                        "error": "Cancelled by user",
                        "steps": [{"componentType": "PowerShelf", "status": "failed"}],
                    }
                ],
            },
        }
    )
    assert res.rc == 0, res.err
    res = await status_patch({"status": "Running"})
    assert res.rc != 0
    assert "status.status" in res.err and "final" in res.err, res.err
    res = await status_patch({"report": {"version": "1", "stages": [{"number": 0}]}})
    assert res.rc != 0
    assert "status.report.stages[0].number" in res.err, res.err
    # the printer columns show the status
    res = await kubectl(devenv.kubeconfig, "get", "nt", "t", "-n", namespace)
    assert "Terminated" in res.out and "Cancelled by user" in res.out


# ---- one meaning of UUID ------------------------------------------------------------------

UUID_FORMS = [
    ("660e8400-e29b-41d4-a716-446655440000", True),  # canonical
    ("660E8400-E29B-41D4-A716-446655440000", True),  # upper case: same form
    ("660e8400e29b41d4a716446655440000", False),  # no dashes: the API server's `uuid` took it
    ("{660e8400-e29b-41d4-a716-446655440000}", False),
    ("urn:uuid:660e8400-e29b-41d4-a716-446655440000", False),
    ("660e8400-e29b-41d4-a716-44665544000", False),
]


@pytest.mark.parametrize(("value", "valid"), UUID_FORMS)
async def test_api_server_and_models_accept_the_same_uuids(
    devenv: Any, crds_installed: list[str], namespace: str, value: str, valid: bool
) -> None:
    from pydantic import ValidationError

    from nicotask.api import NicoTaskSpec

    try:
        NicoTaskSpec.model_validate(
            {"siteId": value, "rackRef": "rack-1", "operation": "PowerOn", "ruleId": value}
        )
        model_ok = True
    except ValidationError:
        model_ok = False
    assert model_ok is valid
    for field in ("siteId", "ruleId"):
        body = json.loads(_task(f"uuid-{field.lower()}"))
        body["spec"][field] = value
        res = await kubectl(
            devenv.kubeconfig,
            "create",
            "--validate=strict",
            "--dry-run=server",
            "-n",
            namespace,
            "-f",
            "-",
            stdin=json.dumps(body),
        )
        assert (res.rc == 0) is valid, (field, value, res.err)
        if not valid:
            assert f"spec.{field}" in res.err, res.err


SAMPLES = Path(__file__).resolve().parents[2] / "samples"


def _uuid_fields() -> list[tuple[str, str, list[Any]]]:
    """(sample, model, path) of every UUID a user writes in a spec, samples as the base."""
    return [
        ("rule-power-on.yaml", "NicoOperationRule", ["spec", "ruleId"]),
        ("site.yaml", "NicoSite", ["spec", "siteId"]),
        ("provider.yaml", "NicoProvider", ["spec", "providerId"]),
        ("rack.yaml", "NicoRack", ["spec", "siteId"]),
        ("rack.yaml", "NicoRack", ["spec", "rules", 0, "ruleId"]),
    ]


@pytest.mark.parametrize(("value", "valid"), UUID_FORMS)
async def test_every_kind_takes_the_same_uuids_as_its_model(
    devenv: Any, crds_installed: list[str], namespace: str, value: str, valid: bool
) -> None:
    """Rules, sites, providers and racks too: the API server and the models agree."""
    from pydantic import ValidationError

    from nicotask import api

    for sample, kind, path in _uuid_fields():
        body = yaml.safe_load((SAMPLES / sample).read_text())
        if kind == "NicoRack" and path[1] == "rules":
            body["spec"]["rules"] = [{"operation": "PowerOn", "ruleId": str(uuid_of(1))}]
        target = body
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        body["metadata"]["name"] = f"uuid-{kind.lower()}"
        if kind == "NicoSite" and valid:
            body["metadata"]["name"] = value.lower()  # a site is named after its siteId
        try:
            getattr(api, kind).model_validate(body)
            model_ok = True
        except ValidationError:
            model_ok = False
        assert model_ok is valid, (kind, path, value)
        res = await kubectl(
            devenv.kubeconfig,
            "create",
            "--validate=strict",
            "--dry-run=server",
            "-n",
            namespace,
            "-f",
            "-",
            stdin=json.dumps(body),
        )
        assert (res.rc == 0) is valid, (kind, path, value, res.err)
        if not valid:
            field = ".".join(str(p) for p in path[1:]).replace(".0.", "[0].")
            assert f"spec.{field}" in res.err, res.err


async def test_a_second_site_for_a_site_id_is_refused(
    devenv: Any, crds_installed: list[str]
) -> None:
    """One siteId, one NicoSite: the API server itself refuses a second one, under another
    name (the CEL rule, naming the field) or under the same (it exists), whatever the case."""
    site_id = str(uuid.uuid4())

    def site(name: str, sid: str, provider: str) -> str:
        return json.dumps(
            {
                "apiVersion": "nico.dev/v1alpha1",
                "kind": "NicoSite",
                "metadata": {"name": name},
                "spec": {"siteId": sid, "providerRef": provider},
            }
        )

    res = await kubectl(devenv.kubeconfig, "create", "-f", "-", stdin=site(site_id, site_id, "a"))
    assert res.rc == 0, res.err
    try:
        for name, sid in (
            ("second-site", site_id),
            ("second-site", site_id.upper()),
            (str(uuid.uuid4()), site_id),
        ):
            res = await kubectl(
                devenv.kubeconfig,
                "create",
                "--validate=strict",
                "-f",
                "-",
                stdin=site(name, sid, "b"),
            )
            assert res.rc != 0, f"a second NicoSite {name} for {sid} was accepted"
            assert "spec.siteId" in res.err, res.err
            assert "metadata.name must be spec.siteId in lower case" in res.err, res.err
        res = await kubectl(
            devenv.kubeconfig, "create", "-f", "-", stdin=site(site_id, site_id.upper(), "b")
        )
        assert res.rc != 0 and "already exists" in res.err, res.err
    finally:
        await kubectl(devenv.kubeconfig, "delete", "nicosite", site_id, "--wait=false")


def uuid_of(n: int) -> str:
    return f"00000000-0000-4000-8000-{n:012d}"


async def test_http_bmc_endpoint_needs_the_racks_opt_in(
    devenv: Any, crds_installed: list[str], namespace: str
) -> None:
    """SSRF: plain http:// sends credentials in the clear; the API server refuses it
    unless the rack says spec.tls.allowInsecureHttp: true."""
    body = yaml.safe_load((SAMPLES / "rack.yaml").read_text())
    body["metadata"]["name"] = "http-rack"
    for component in body["spec"]["components"]:
        component["redfish"]["endpoint"] = "http://10.0.0.5"
    body["spec"].pop("tls", None)
    res = await kubectl(
        devenv.kubeconfig,
        "create",
        "--dry-run=server",
        "-n",
        namespace,
        "-f",
        "-",
        stdin=json.dumps(body),
    )
    assert res.rc != 0
    assert "http:// BMC endpoints need spec.tls.allowInsecureHttp: true" in res.err, res.err
    body["spec"]["tls"] = {"allowInsecureHttp": True}
    res = await kubectl(
        devenv.kubeconfig,
        "create",
        "--dry-run=server",
        "-n",
        namespace,
        "-f",
        "-",
        stdin=json.dumps(body),
    )
    assert res.rc == 0, res.err
