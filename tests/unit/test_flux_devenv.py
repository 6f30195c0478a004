"""The local Flux's build and Git server (nicotask_dev.devenv.flux*, githttp), without
controllers."""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest

from nicotask_dev.devenv import flux, fluxbuild, githttp, ports
from nicotask_dev.devenv.gitrepo import GitRepo

SOURCE, KUSTOMIZE = fluxbuild.CONTROLLERS
SOURCE_GOMOD = """module github.com/fluxcd/source-controller

go 1.26.0

replace github.com/fluxcd/source-controller/api => ./api

// Replace digest lib to master to gather access to BLAKE3.
replace github.com/opencontainers/go-digest => github.com/opencontainers/go-digest v1.0.1-0.2022

require (
\tgithub.com/fluxcd/pkg/artifact v0.18.3
)
"""
KUSTOMIZE_GOMOD = """module github.com/fluxcd/kustomize-controller

go 1.26.0

replace github.com/fluxcd/kustomize-controller/api => ./api

replace github.com/opencontainers/go-digest => github.com/opencontainers/go-digest v1.0.1-0.2022

// Pin kustomize to v5.8.1
replace (
\tsigs.k8s.io/kustomize/api => sigs.k8s.io/kustomize/api v0.21.1
\tsigs.k8s.io/kustomize/kyaml v0.20.0 => sigs.k8s.io/kustomize/kyaml v0.21.1
)
"""


def test_replaces_reads_single_lines_blocks_and_versioned_old_paths() -> None:
    assert fluxbuild.replaces(KUSTOMIZE_GOMOD) == {
        "github.com/fluxcd/kustomize-controller/api": "./api",
        "github.com/opencontainers/go-digest": "github.com/opencontainers/go-digest v1.0.1-0.2022",
        "sigs.k8s.io/kustomize/api": "sigs.k8s.io/kustomize/api v0.21.1",
        "sigs.k8s.io/kustomize/kyaml": "sigs.k8s.io/kustomize/kyaml v0.21.1",
    }


def test_the_wrapper_requires_both_controllers_and_maps_local_replaces_to_modules() -> None:
    out = fluxbuild.wrapper_gomod({SOURCE: SOURCE_GOMOD, KUSTOMIZE: KUSTOMIZE_GOMOD})
    assert out.startswith(f"module {fluxbuild.WRAPPER}\n\ngo 1.26.0\n")
    assert f"\tgithub.com/fluxcd/source-controller {fluxbuild.VERSION}\n" in out
    assert f"\tgithub.com/fluxcd/kustomize-controller {fluxbuild.VERSION}\n" in out
    for api in ("source-controller/api", "kustomize-controller/api"):
        assert f"github.com/fluxcd/{api} => github.com/fluxcd/{api} {fluxbuild.VERSION}" in out
    assert "=> ./" not in out
    # the shared replace appears once; the refused artifact zip is pinned
    assert out.count("github.com/opencontainers/go-digest =>") == 1
    assert "github.com/fluxcd/pkg/artifact => github.com/fluxcd/pkg/artifact v0.18.0" in out
    assert "sigs.k8s.io/kustomize/kyaml => sigs.k8s.io/kustomize/kyaml v0.21.1" in out


def test_controllers_that_disagree_on_a_replace_fail_the_build_loudly() -> None:
    other = KUSTOMIZE_GOMOD.replace("go-digest v1.0.1-0.2022", "go-digest v1.0.0")
    with pytest.raises(RuntimeError, match="go-digest"):
        fluxbuild.wrapper_gomod({SOURCE: SOURCE_GOMOD, KUSTOMIZE: other})


def test_the_newest_go_directive_wins_and_picks_the_toolchain() -> None:
    newer = SOURCE_GOMOD.replace("go 1.26.0", "go 1.27.1")
    assert "\ngo 1.27.1\n" in fluxbuild.wrapper_gomod({SOURCE: newer, KUSTOMIZE: KUSTOMIZE_GOMOD})
    assert fluxbuild.toolchain("1.26.0", "1.26.8") == "local"
    assert fluxbuild.toolchain("1.27.1", "1.26.8") == fluxbuild.GO_TOOLCHAIN


def test_the_kustomization_waits_and_prunes_into_the_target_namespace() -> None:
    ks = flux.kustomization("k", "src", "site", "ns1")
    assert ks["spec"]["wait"] is True and ks["spec"]["prune"] is True
    assert ks["spec"]["targetNamespace"] == "ns1"
    assert ks["spec"]["sourceRef"] == {"kind": "GitRepository", "name": "src"}
    src = flux.git_repository("src", "http://127.0.0.1:1/site.git")
    assert src["spec"]["ref"] == {"branch": "main"}
    assert src["metadata"]["namespace"] == ks["metadata"]["namespace"] == flux.NAMESPACE


def test_parse_cgi_takes_the_status_header_and_the_body() -> None:
    status, headers, body = githttp.parse_cgi(
        b"Status: 404 Not Found\r\nContent-Type: text/plain\r\n\r\nnope"
    )
    assert (status, headers, body) == (404, [("Content-Type", "text/plain")], b"nope")
    assert githttp.parse_cgi(b"Content-Type: x\n\nbody")[0] == 200


@pytest.fixture
def git_server(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    handler = type(
        "Handler",
        (githttp._Handler,),
        {"root": tmp_path, "backend": githttp.git_http_backend()},
    )
    server = ThreadingHTTPServer((ports.LOOPBACK, 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield tmp_path, f"http://{ports.LOOPBACK}:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_git_clones_a_pushed_commit_over_the_http_backend(
    git_server: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory
) -> None:
    root, url = git_server
    repo = GitRepo(root / "t1")
    repo.write("site/a.yaml", [{"kind": "ConfigMap", "metadata": {"name": "a"}}])
    revision = repo.commit("add a")
    clone = tmp_path_factory.mktemp("clone") / "c"
    subprocess.run(
        ["git", "clone", "-q", f"{url}/t1/site.git", str(clone)],
        check=True,
        capture_output=True,
        env={"GIT_CONFIG_NOSYSTEM": "1", "HOME": str(clone.parent), "PATH": "/usr/bin:/bin"},
    )
    head = subprocess.run(
        ["git", "-C", str(clone), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    )
    assert head.stdout.strip() == revision
    assert (clone / "site" / "a.yaml").exists()
