"""A local Git repository for GitOps tests: a bare repository and a working copy.

GitOps tools read the bare repository by its ``file://`` URL (Argo CD's repo
server clones it with the git command like any remote); commits are made in
the working copy and pushed, as a user would push to a forge.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import yaml

BRANCH = "main"


def _git(cwd: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "nicotask tests",
        "GIT_AUTHOR_EMAIL": "tests@nicotask.invalid",
        "GIT_COMMITTER_NAME": "nicotask tests",
        "GIT_COMMITTER_EMAIL": "tests@nicotask.invalid",
        "GIT_CONFIG_NOSYSTEM": "1",
        "HOME": str(cwd),
    }
    proc = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)}: {proc.stderr.strip()}")
    return proc.stdout.strip()


class GitRepo:
    """`root/site.git` (bare, what the tools read) and `root/work` (where commits are made)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.bare = root / "site.git"
        self.work = root / "work"
        if not self.bare.exists():
            root.mkdir(parents=True, exist_ok=True)
            _git(root, "init", "-q", "--bare", "-b", BRANCH, str(self.bare))
            _git(root, "init", "-q", "-b", BRANCH, str(self.work))
            _git(self.work, "remote", "add", "origin", str(self.bare))

    @property
    def url(self) -> str:
        return self.bare.resolve().as_uri()

    def write(self, path: str, documents: list[dict[str, Any]] | None) -> None:
        """Stage `path` holding these YAML documents (None: delete the file)."""
        target = self.work / path
        if documents is None:
            _git(self.work, "rm", "-q", path)
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(yaml.safe_dump_all(documents, sort_keys=False))
        _git(self.work, "add", path)

    def commit(self, message: str) -> str:
        """Commit what is staged and push it; the new revision."""
        _git(self.work, "commit", "-q", "-m", message)
        _git(self.work, "push", "-q", "origin", BRANCH)
        return _git(self.work, "rev-parse", "HEAD")
