"""Helpers for the storscan test modules: run the CLI, name things from the push log, damage trees.

Expectations never come from storscan: digests and sizes are looked up in
``fixtures/demo.pushed.json`` (the log the fixture script wrote while pushing).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.registry import registry_available
from tests.support.tree import REPO_ROOT, repo_dir, v2_dir

Pushed = dict[str, Any]

needs_registry = pytest.mark.skipif(
    not registry_available(),
    reason="docker-registry (distribution 2.8) is not on PATH; install the Debian package "
    "docker-registry to run the real-registry tests",
)

# Reference time given to every audit run, so upload ages never depend on the clock.
UPLOAD_STARTED = "2024-01-01T00:00:00Z"
NOW = "2024-01-01T12:00:00Z"

EXIT_OK, EXIT_FINDINGS, EXIT_USAGE = 0, 1, 2

# Repositories whose storage a registry's own GC would break (multi-arch children, a referrer)
# or that are empty: removing them from a demo copy leaves no error or warning to find.
HAZARD_REPOS = ("tools", "library/busybox", "team/app/web", "scratch", "incoming")


@dataclass
class Run:
    """One finished storscan run, in a subprocess or in this process."""

    args: list[str]
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        assert self.code in (EXIT_OK, EXIT_FINDINGS), self.describe()
        return json.loads(self.stdout)

    def describe(self) -> str:
        return f"storscan {' '.join(self.args)} -> {self.code}\n{self.stderr}"


def clean_env(**extra: str) -> dict[str, str]:
    """The test process's environment without registry overrides, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
    env.update(extra)
    return env


def storscan(*args: object, env: dict[str, str] | None = None, cwd: Path | None = None) -> Run:
    """Run the real entry point (``python -m storscan``) in a subprocess."""
    argv = [str(a) for a in args]
    proc = subprocess.run(
        [sys.executable, "-m", "storscan", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env() if env is None else env,
        cwd=REPO_ROOT if cwd is None else cwd,
        check=False,
    )
    return Run(argv, proc.returncode, proc.stdout, proc.stderr)


def cli(*args: object) -> Run:
    """Run the typer app in this process (CliRunner): the same contract, without a new process.

    Registry overrides in this process's environment are hidden from the run, as in storscan().
    """
    from typer.testing import CliRunner

    from storscan.cli import app

    argv = [str(a) for a in args]
    hidden: dict[str, str | None] = {k: None for k in os.environ if k.startswith("REGISTRY_")}
    result = CliRunner().invoke(app, argv, env=hidden)
    stderr = result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        stderr += "".join(traceback.format_exception(result.exception))
    return Run(argv, result.exit_code, result.stdout, stderr)


# --- the push log -------------------------------------------------------------------------------


class Log:
    """Name lookups in the push log: every blob and manifest has a unique ``name`` there."""

    def __init__(self, pushed: Pushed) -> None:
        self.pushed = pushed
        self.by_name: dict[str, dict[str, Any]] = {}
        for rec in [*pushed["blobs"], *pushed["manifests"]]:
            assert rec["name"] not in self.by_name, rec["name"]
            self.by_name[rec["name"]] = rec
        self.size_of: dict[str, int] = {r["digest"]: r["size"] for r in self.by_name.values()}

    def digest(self, name: str) -> str:
        return str(self.by_name[name]["digest"])

    def size(self, name: str) -> int:
        return int(self.by_name[name]["size"])

    def sizes(self, *names: str) -> int:
        return sum(self.size(n) for n in names)

    def manifest(self, name: str) -> dict[str, Any]:
        rec = self.by_name[name]
        assert "references" in rec, f"{name} is not a manifest"
        return rec


# --- paths in a storage root ---------------------------------------------------------------------


def hex_of(digest: str) -> str:
    return digest.split(":", 1)[1]


def revision_link(root: Path, repo: str, digest: str) -> Path:
    return repo_dir(root, repo) / "_manifests" / "revisions" / "sha256" / hex_of(digest) / "link"


def layer_link(root: Path, repo: str, digest: str) -> Path:
    return repo_dir(root, repo) / "_layers" / "sha256" / hex_of(digest) / "link"


def tag_dir(root: Path, repo: str, tag: str) -> Path:
    return repo_dir(root, repo) / "_manifests" / "tags" / tag


def upload_dirs(root: Path) -> list[Path]:
    return sorted((v2_dir(root) / "repositories").glob("**/_uploads/*"))


def write_link(path: Path, digest: str) -> None:
    """A link file exactly as the registry writes it: the digest, no newline."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(digest.encode("ascii"))
