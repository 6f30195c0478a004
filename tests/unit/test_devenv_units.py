"""Pure helpers of nicotask_dev.devenv: no servers."""

from __future__ import annotations

import ast
import base64
import json
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

import bcrypt
import pytest
import yaml
from cryptography import x509

from nicotask_dev.devenv import kube, pki, ports, redfish
from nicotask_dev.devenv.cli import export_lines
from nicotask_dev.devenv.env import DevEnv
from nicotask_dev.devenv.process import ProcessRecord, pid_alive


def test_kubeconfig_embeds_credentials_and_server(tmp_path: Path) -> None:
    p = pki.ensure_pki(tmp_path / "pki")
    path = kube.write_kubeconfig(tmp_path / "kubeconfig", "https://127.0.0.1:6443", p)
    cfg = yaml.safe_load(path.read_text())
    assert cfg["current-context"] == kube.CONTEXT_NAME
    cluster = cfg["clusters"][0]["cluster"]
    assert cluster["server"] == "https://127.0.0.1:6443"
    assert base64.b64decode(cluster["certificate-authority-data"]) == p.ca_cert.read_bytes()
    user = cfg["users"][0]["user"]
    cert = x509.load_pem_x509_certificate(base64.b64decode(user["client-certificate-data"]))
    assert cert.subject.rfc4514_string() == "O=system:masters,CN=nicotask-admin"
    assert kube.server_from_kubeconfig(path) == "https://127.0.0.1:6443"
    assert path.stat().st_mode & 0o077 == 0


def test_serving_certificate_names(tmp_path: Path) -> None:
    p = pki.ensure_pki(tmp_path)
    cert = x509.load_pem_x509_certificate(p.serving_cert.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "kubernetes.default.svc" in san.get_values_for_type(x509.DNSName)
    assert "127.0.0.1" in {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}
    # kept across calls: tokens and kubeconfigs stay valid over down/up
    before = p.ca_cert.read_bytes()
    assert pki.ensure_pki(tmp_path).ca_cert.read_bytes() == before


def test_redfish_config_is_python_the_emulator_can_read(tmp_path: Path) -> None:
    systems = redfish.default_systems()
    cfg = redfish.write_config(tmp_path, systems)
    namespace: dict[str, object] = {}
    exec(compile(cfg.read_text(), str(cfg), "exec"), namespace)
    assert namespace["SUSHY_EMULATOR_FAKE_DRIVER"] is True
    fake = namespace["SUSHY_EMULATOR_FAKE_SYSTEMS"]
    assert isinstance(fake, list) and len(fake) == 10
    assert {"uuid", "name", "power_state", "nics"} <= set(fake[0])
    user, digest = Path(str(namespace["SUSHY_EMULATOR_AUTH_FILE"])).read_text().strip().split(":")
    assert user == "admin" and bcrypt.checkpw(b"password", digest.encode())
    ast.parse(cfg.read_text())


def test_default_systems_have_fixed_unique_ids() -> None:
    a, b = redfish.default_systems(), redfish.default_systems()
    assert [s["uuid"] for s in a] == [s["uuid"] for s in b]
    assert len({s["uuid"] for s in a}) == len({s["name"] for s in a}) == 10
    view = redfish.public_systems(a, "http://h:1")
    assert view[0]["path"] == f"/redfish/v1/Systems/{a[0]['uuid']}"


def test_pick_ports_distinct_and_sticky() -> None:
    first = ports.pick_ports(["a", "b", "c"])
    assert len(set(first.values())) == 3
    assert ports.pick_ports(["a", "b"], previous=first) == {"a": first["a"], "b": first["b"]}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        taken = s.getsockname()[1]
        assert ports.pick_ports(["a"], previous={"a": taken})["a"] != taken


def test_export_lines_are_shell_quoted() -> None:
    out = export_lines({"KUBECONFIG": "/tmp/a b/kubeconfig", "X": "it's"})
    assert shlex.split(out.splitlines()[0]) == ["export", "KUBECONFIG=/tmp/a b/kubeconfig"]
    assert shlex.split(out.splitlines()[1]) == ["export", "X=it's"]


def test_exports_and_status_from_state(tmp_path: Path) -> None:
    env = DevEnv(tmp_path)
    assert env.exports() == {}
    assert env.status()["up"] is False
    env.save_state(
        {
            "up": True,
            "kubeconfig": "/k",
            "temporal_address": "127.0.0.1:7",
            "temporal_namespace": "default",
            "redfish_url": "http://127.0.0.1:8",
            "redfish_user": "admin",
            "redfish_password": "password",
            "shim_url": "http://127.0.0.1:9",
            "external": [],
            "processes": [ProcessRecord("etcd", 2**22 + 12345, ["etcd"], "/l", 0).to_json()],
        }
    )
    ex = env.exports()
    assert ex["KUBECONFIG"] == "/k"
    assert ex["NICOTASK_TEMPORAL_ADDRESS"] == "127.0.0.1:7"
    assert ex["NICOTASK_SHIM_URL"] == "http://127.0.0.1:9"
    assert ex["NICOTASK_DEV_RUN_DIR"] == str(tmp_path.resolve())
    st = env.status()
    assert st["up"] is False  # the recorded pid is not alive
    assert st["processes"][0]["alive"] is False
    json.dumps(st)


def test_pid_alive_checks_start_time() -> None:
    import os

    from nicotask_dev.devenv.process import start_time

    me = os.getpid()
    assert pid_alive(me)
    assert pid_alive(me, start_time(me))
    assert not pid_alive(me, start_time(me) + 1)


def test_a_restarted_process_keeps_its_place_and_its_stop_signal(tmp_path: Path) -> None:
    """`stopped` stops a process with its recorded signal (PostgreSQL: SIGINT) and starts
    it again in its place in the start order, so `down` still stops PostgreSQL after the
    Temporal server that uses it."""
    env = DevEnv(tmp_path, environ={})
    # Each says it is ready once its handler is set (a SIGINT before that would kill it
    # unhandled). Python, not a bash trap: bash cannot trap a signal ignored on entry,
    # as SIGINT is for anything started in the background by a non-interactive shell.
    script = (
        "import os, pathlib, signal, sys, time\n"
        "def on_int(*_):\n"
        "    pathlib.Path('stopped-by-int').touch()\n"
        "    sys.exit(0)\n"
        "signal.signal(signal.SIGINT, on_int)\n"
        "pathlib.Path(f'ready.{os.getpid()}').touch()\n"
        "while True:\n"
        "    time.sleep(0.1)\n"
    )
    for name in ("first", "db", "server"):
        env.start_process(
            name,
            [sys.executable, "-c", script],
            cwd=tmp_path,
            extra={"cwd": str(tmp_path), "stop_signal": "SIGINT"},
        )
    deadline = time.monotonic() + 30
    while len(list(tmp_path.glob("ready.*"))) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        before = env.record("db")
        with env.stopped("db") as rec:
            assert rec.pid == before.pid and not pid_alive(before.pid)
            assert (tmp_path / "stopped-by-int").exists()  # its recorded stop signal
        after = env.record("db")
        assert after.pid != before.pid and after.extra["stop_signal"] == "SIGINT"
        assert [r.name for r in DevEnv.records(env.load_state())] == ["first", "db", "server"]
    finally:
        assert env.down() == ["server", "db", "first"]


def test_go_build_builds_and_reports_a_failure_with_go_s_message(tmp_path: Path) -> None:
    """The one `go build` runner the cached builds share (kube-apiserver, the kind node's
    Kubernetes commands, Argo CD): a binary when it compiles, go's error when not."""
    from nicotask_dev.devenv.gobuild import build_env, go_build

    (tmp_path / "go.mod").write_text("module example.com/hello\n\ngo 1.21\n")
    (tmp_path / "main.go").write_text('package main\n\nfunc main() { println("hi") }\n')
    go_build(["-o", str(tmp_path / "hello"), "."], tmp_path, build_env(), "hello")
    assert (
        subprocess.run([str(tmp_path / "hello")], capture_output=True, text=True).stderr == "hi\n"
    )

    (tmp_path / "main.go").write_text("package main\n\nfunc main() { undefined() }\n")
    with pytest.raises(RuntimeError, match=r"go build of hello failed:(.|\n)*undefined"):
        go_build(["-o", str(tmp_path / "hello"), "."], tmp_path, build_env(), "hello")
