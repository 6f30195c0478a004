"""The repository stands alone: the vendored contract is consistent, and nothing
in the repository points a reader (or a test) at a file outside it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CONTRACT = REPO / "contract"
# Where our own text lives; build output, venvs and run folders are not ours.
OWN_TEXT = ["README.md", "Makefile", "Dockerfile", "pyproject.toml"]
OWN_DIRS = ["operator", "tests", "docs", "bench", "charts", "samples", "hack", "deploy"]
SUFFIXES = {".py", ".md", ".yaml", ".yml", ".toml", ".sh", ".txt", ".tpl", ".json", ""}
SKIP_PARTS = {"__pycache__", ".venv", ".run", "results"}
# Spelled in pieces so that this file does not match itself.
OUTSIDE = re.compile(
    "|".join(
        [
            r"\b" + "UPSTREAM" + r"\.md",
            r"\b" + "DESIGN" + r"\.md",
            r"\.\./" + "shared",
            r"\bshared/" + "seed",
            r"(?<![\w/])" + "seed" + r"/(openapi|cancel)",
        ]
    )
)


def _own_files() -> list[Path]:
    files = [REPO / name for name in OWN_TEXT if (REPO / name).exists()]
    for d in OWN_DIRS:
        for path in sorted((REPO / d).rglob("*")):
            if not path.is_file() or path.suffix not in SUFFIXES:
                continue
            if SKIP_PARTS & set(path.relative_to(REPO).parts) or ".egg-info" in str(path):
                continue
            files.append(path)
    return files


def test_openapi_yaml_is_the_block_of_the_cancel_page() -> None:
    page = (CONTRACT / "cancel-task.md").read_text()
    m = re.search(r"^## OpenAPI Specification\n\n```yaml\n(.*?)^```$", page, re.S | re.M)
    assert m, "cancel-task.md has no OpenAPI yaml block"
    assert (CONTRACT / "openapi.yaml").read_text() == m.group(1)


def test_the_contract_readme_names_its_origin() -> None:
    readme = (CONTRACT / "README.md").read_text()
    assert "copies" in readme
    assert "https://docs.nvidia.com/infra-controller/" in readme


def test_no_file_cites_a_file_outside_the_repository() -> None:
    files = _own_files()
    assert len(files) > 50, "the walk found too few files: is REPO right?"
    offenders = []
    for path in files:
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if OUTSIDE.search(line):
                offenders.append(f"{path.relative_to(REPO)}:{n}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


def _markdown_files() -> list[Path]:
    return [p for p in _own_files() if p.suffix == ".md"] + sorted(CONTRACT.glob("*.md"))


@pytest.mark.parametrize("path", _markdown_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_resolve_inside_the_repository(path: Path) -> None:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)  # code is not a link
    text = re.sub(r"`[^`\n]*`", "", text)
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:|#", target):
            continue  # a URL or an anchor in the same page
        resolved = (path.parent / target.split("#")[0]).resolve()
        assert resolved.is_relative_to(REPO), f"{target} leaves the repository"
        assert resolved.exists(), f"{path.relative_to(REPO)}: broken link {target}"


@pytest.mark.parametrize(
    "path",
    [p for p in _markdown_files() if p.parent != CONTRACT or p.name == "README.md"],
    ids=lambda p: str(p.relative_to(REPO)),
)
def test_nico_is_spelled_out_on_first_use(path: Path) -> None:
    text = path.read_text()
    first = text.find("NICo")
    if first < 0:
        return
    near = " ".join(text[max(0, first - 120) : first + 120].split())
    assert "NVIDIA Infra Controller" in near, f"first NICo of {path.name}: ...{near}..."
