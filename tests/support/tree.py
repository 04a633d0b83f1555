"""Helpers for registry storage trees on disk: extract the fixture archive, fingerprint a tree."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import tarfile
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent.parent
FIXTURES_DIR = REPO_ROOT / "fixtures"
DEMO_ARCHIVE = FIXTURES_DIR / "demo.tar.gz"
DEMO_PUSHED = FIXTURES_DIR / "demo.pushed.json"
V2 = Path("docker", "registry", "v2")


def extract_archive(archive: Path, dest: Path) -> Path:
    """Extract a storage-root archive into ``dest`` (created) and return ``dest``.

    Uses tarfile's ``data`` filter: no absolute names, no escaping links, mtimes kept.
    """
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "r:*") as tar:
        tar.extractall(dest, filter="data")
    return dest


def load_pushed(path: Path = DEMO_PUSHED) -> dict[str, Any]:
    """The push log written by ``fixtures/regenerate.py``."""
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def v2_dir(storage_root: Path) -> Path:
    """``<storage root>/docker/registry/v2``."""
    return storage_root / V2


def blob_data_path(storage_root: Path, digest: str) -> Path:
    """``blobs/<alg>/<hex2>/<hex>/data`` for a digest."""
    alg, hexpart = digest.split(":", 1)
    return v2_dir(storage_root) / "blobs" / alg / hexpart[:2] / hexpart / "data"


def repo_dir(storage_root: Path, repo: str) -> Path:
    return v2_dir(storage_root) / "repositories" / repo


def tree_fingerprint(root: Path) -> str:
    """A sha256 over every entry below ``root``: path, type, mode, mtime, size and content.

    Any change a tool makes to the tree (a file written, removed, renamed, touched, or an empty
    directory created or removed) changes the fingerprint; reading does not.
    """
    h = hashlib.sha256()
    entries: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        base = Path(dirpath)
        for name in [*dirnames, *filenames]:
            path = base / name
            entries.append((path.relative_to(root).as_posix(), path))
    for rel, path in sorted(entries):
        st = path.lstat()
        if stat.S_ISDIR(st.st_mode):
            kind, payload = "d", b""
        elif stat.S_ISREG(st.st_mode):
            kind, payload = "f", hashlib.sha256(path.read_bytes()).digest()
        elif stat.S_ISLNK(st.st_mode):
            kind, payload = "l", os.readlink(path).encode()
        else:
            kind, payload = "o", b""
        h.update(f"{rel}\0{kind}\0{st.st_mode:o}\0{st.st_mtime_ns}\0{st.st_size}\0".encode())
        h.update(payload)
        h.update(b"\n")
    return h.hexdigest()
