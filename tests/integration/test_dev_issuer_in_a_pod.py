"""The dev token issuer cannot be trusted inside a pod by accident: `nicotask dev shim` as
a process, on the dev environment's API server, with KUBERNETES_SERVICE_HOST set as the
kubelet sets it in every pod."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from nicotask_dev.shim.devissuer import (
    ALLOW_IN_CLUSTER_ENV,
    PRIVATE_KEY_FILE,
    PUBLIC_KEY_FILE,
    ensure_keys,
    issue_token,
)
from nicotask_dev.shim.testing import free_port


def dev_shim(run_dir: Path, kubeconfig: str, port: int, **env: str) -> subprocess.Popen[str]:
    environ = {**os.environ, "KUBERNETES_SERVICE_HOST": "10.96.0.1", **env}
    environ.pop("NICOTASK_SHIM_ISSUERS_FILE", None)
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "nicotask",
            "dev",
            "shim",
            "--run-dir",
            str(run_dir),
            "--kubeconfig",
            kubeconfig,
            "--port",
            str(port),
        ],
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_refused_in_a_pod_without_the_override(devenv: Any, tmp_path: Path) -> None:
    proc = dev_shim(tmp_path, str(devenv.kubeconfig), free_port())
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode != 0, out
    assert "would be trusted inside a pod" in out and ALLOW_IN_CLUSTER_ENV in out, out
    assert "Traceback" not in out, out
    assert list(tmp_path.iterdir()) == []  # no key pair generated


def test_override_warns_and_generates_no_key(devenv: Any, tmp_path: Path) -> None:
    # Without keys, even the override does not make the shim create them in a pod.
    proc = dev_shim(tmp_path, str(devenv.kubeconfig), free_port(), **{ALLOW_IN_CLUSTER_ENV: "true"})
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode != 0 and "no public key" in out, out
    assert list(tmp_path.iterdir()) == []

    # Keys made outside the pod (as `make run` does): trusted, with a loud warning.
    ensure_keys(tmp_path)
    before = (tmp_path / PRIVATE_KEY_FILE).read_bytes(), (tmp_path / PUBLIC_KEY_FILE).read_bytes()
    port = free_port()
    proc = dev_shim(tmp_path, str(devenv.kubeconfig), port, **{ALLOW_IN_CLUSTER_ENV: "true"})
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:  # until its caches have synced
            assert proc.poll() is None, proc.communicate()[0]
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                    break
            assert time.monotonic() < deadline, "the shim did not become ready"
            time.sleep(0.3)
        token = issue_token(tmp_path, "nobody-org", ["PROVIDER_ADMIN"], "alice")
        answer = httpx.get(
            f"{url}/v2/org/nobody-org/nico/task/x",
            headers={"Authorization": f"Bearer {token}"},
            timeout=5,
        )
        # Authenticated by the dev key (not 401); the org has no provider here.
        assert answer.status_code == 400, answer.text
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert "DEV TOKEN ISSUER TRUSTED INSIDE A POD" in out, out
    assert (
        (tmp_path / PRIVATE_KEY_FILE).read_bytes(),
        (tmp_path / PUBLIC_KEY_FILE).read_bytes(),
    ) == before
