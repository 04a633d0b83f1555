"""Shared pytest fixtures."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import HAZARD_REPOS, UPLOAD_STARTED, Log, upload_dirs
from tests.support.tree import DEMO_ARCHIVE, extract_archive, load_pushed, repo_dir


@pytest.fixture
def demo_root(tmp_path: Path) -> Path:
    """A fresh copy of the demo registry storage (the directory containing ``docker/``)."""
    return extract_archive(DEMO_ARCHIVE, tmp_path / "demo")


@pytest.fixture
def pushed() -> dict[str, Any]:
    """The push log of the demo archive (``fixtures/demo.pushed.json``)."""
    return load_pushed()


@pytest.fixture
def log(pushed: dict[str, Any]) -> Log:
    """Name lookups in the push log."""
    return Log(pushed)


@pytest.fixture(scope="session")
def demo_master(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo archive extracted once per session. Never modify it: copy it (demo_tree)."""
    return extract_archive(DEMO_ARCHIVE, tmp_path_factory.mktemp("demo-master") / "root")


@pytest.fixture
def demo_tree(demo_master: Path, tmp_path: Path) -> Path:
    """A fresh copy of the demo storage root, faster than extracting the archive again.

    copytree keeps modes, file and directory mtimes, and empty directories.
    """
    return Path(shutil.copytree(demo_master, tmp_path / "demo-copy", symlinks=True))


@pytest.fixture
def healthy_root(demo_master: Path, tmp_path: Path) -> Path:
    """A demo copy without HAZARD_REPOS, its upload started at UPLOAD_STARTED.

    What is left (library/alpine, team/app/api, foo, foo/bar) is storage as the registry
    wrote it: an untagged revision, an API-deleted manifest, an orphan layer, an upload.
    """
    root = Path(shutil.copytree(demo_master, tmp_path / "healthy", symlinks=True))
    for name in HAZARD_REPOS:
        shutil.rmtree(repo_dir(root, name))
    for upload in upload_dirs(root):
        (upload / "startedat").write_text(UPLOAD_STARTED)
    return root
