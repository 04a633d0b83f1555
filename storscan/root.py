"""Find the registry tree a user pointed at: a storage root, a ``v2`` directory or a config.yml."""

from __future__ import annotations

import os
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from storscan.errors import NotARegistryError, UnsupportedError, UsageError
from storscan.layout import BLOBS, REPOSITORIES, V2_PARTS

DEFAULT_ROOTDIRECTORY = "/var/lib/registry"
ROOT_ENV = "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY"
# Keys under `storage` that configure something other than the driver.
_NON_DRIVER_KEYS = {"maintenance", "cache", "delete", "redirect", "tag"}


@dataclass(frozen=True)
class Root:
    """A located registry tree.

    ``storage_root`` is the filesystem driver's rootdirectory (quarantines and the lock live
    there, outside ``docker/``); ``v2`` is ``<storage_root>/docker/registry/v2``. ``empty`` is
    true when nothing is stored yet.
    """

    storage_root: Path
    v2: Path
    empty: bool = False
    readonly: bool | None = None
    config_path: Path | None = None
    label: str | None = None  # what the user named, when it differs (an archive)

    @property
    def v2_prefix(self) -> str:
        """The v2 directory relative to the storage root, with a trailing ``/`` (or empty)."""
        rel = self.v2.relative_to(self.storage_root).as_posix()
        return "" if rel == "." else rel + "/"

    @property
    def name(self) -> str:
        """The root as the user named it, for reports and messages."""
        return self.label or str(self.storage_root)


def _is_v2(path: Path) -> bool:
    return path.name == "v2" and ((path / REPOSITORIES).is_dir() or (path / BLOBS).is_dir())


def _find_below(path: Path, depth: int) -> Path | None:
    """A storage root or v2 directory one or two levels below ``path``, for the error message."""
    if depth == 0:
        return None
    try:
        children = sorted(p for p in path.iterdir() if p.is_dir() and not p.is_symlink())
    except OSError:
        return None
    for child in children:
        if child.joinpath(*V2_PARTS).is_dir():
            return child
        if _is_v2(child):
            return child
    for child in children:
        found = _find_below(child, depth - 1)
        if found is not None:
            return found
    return None


def resolve_root(path: Path) -> Root:
    """Locate the v2 tree for ``path`` or raise a one-line error saying what was expected."""
    if not path.exists():
        raise NotARegistryError(
            f"{path}: no such directory; give the registry's storage root "
            "(the directory holding docker/registry/v2) or --config config.yml"
        )
    if not path.is_dir():
        raise NotARegistryError(f"{path}: not a directory; give the registry's storage root")
    v2 = path.joinpath(*V2_PARTS)
    if v2.is_dir():
        return Root(storage_root=path, v2=v2)
    if path.name == "v2" and (
        (path / REPOSITORIES).is_dir() or (path / BLOBS).is_dir() or not any(path.iterdir())
    ):
        parents = path.parents
        storage_root = parents[2] if tuple(path.parts[-3:]) == V2_PARTS else path
        return Root(storage_root=storage_root, v2=path)
    try:
        entries = [e for e in path.iterdir() if e.name != "scheduler-state.json"]
    except PermissionError as exc:
        raise NotARegistryError(
            f"{path}: cannot list it ({exc.strerror}); run as its owner"
        ) from exc
    if not entries:
        return Root(storage_root=path, v2=v2, empty=True)
    if all(e.name.startswith(".storscan") for e in entries):
        return Root(storage_root=path, v2=v2, empty=True)
    below = _find_below(path, 2)
    found = ", ".join(sorted(e.name for e in entries)[:5])
    hint = f"; a registry tree lies at {below}: run storscan on that" if below else ""
    raise NotARegistryError(
        f"{path}: not registry storage: expected docker/registry/v2 (or repositories/ and blobs/ "
        f"in a v2 directory), found {found}{hint}"
    )


def _dig(mapping: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(mapping, dict):
            return None
        mapping = mapping.get(key)
    return mapping


def resolve_config(config_path: Path, environ: dict[str, str] | None = None) -> Root:
    """Read a registry config.yml the way the registry does and locate its storage."""
    import yaml

    env = os.environ if environ is None else environ
    try:
        text = config_path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(
            f"{config_path}: not UTF-8 text; is this the registry's config.yml?"
        ) from exc
    except OSError as exc:
        raise UsageError(
            f"{config_path}: cannot read the registry config ({exc.strerror})"
        ) from exc
    try:
        config = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        line = getattr(getattr(exc, "problem_mark", None), "line", None)
        where = f" at line {line + 1}" if line is not None else ""
        raise UsageError(
            f"{config_path}: not valid YAML{where}; fix the file or pass ROOT"
        ) from exc
    if not isinstance(config, dict):
        raise UsageError(f"{config_path}: not a registry config (expected a mapping at the top)")
    storage = config.get("storage") or {}
    if not isinstance(storage, dict):
        raise UsageError(f"{config_path}: storage is not a mapping; fix the registry config")
    configured = _dig(storage, "filesystem", "rootdirectory")
    if configured is not None and not isinstance(configured, str):
        raise UsageError(
            f"{config_path}: storage.filesystem.rootdirectory is not a path ({configured!r})"
        )
    drivers = [k for k in storage if k not in _NON_DRIVER_KEYS]
    if len(drivers) > 1:
        raise UsageError(f"{config_path}: storage names several drivers ({', '.join(drivers)})")
    driver = drivers[0] if drivers else "filesystem"
    if driver != "filesystem":
        raise UnsupportedError(
            f"{config_path}: storage driver {driver!r} is not supported yet; storscan reads the "
            "filesystem driver only (copy or mount the tree and pass its path)"
        )
    rootdir = env.get(ROOT_ENV) or configured
    rootdir = str(rootdir) if rootdir else DEFAULT_ROOTDIRECTORY
    readonly = bool(_dig(storage, "maintenance", "readonly", "enabled"))
    located = resolve_root(Path(rootdir))
    return Root(
        storage_root=located.storage_root,
        v2=located.v2,
        empty=located.empty,
        readonly=readonly,
        config_path=config_path,
    )


ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz")


def is_archive(path: Path) -> bool:
    """A tar archive of a storage root (how fixtures and backups travel)."""
    return path.is_file() and path.name.endswith(ARCHIVE_SUFFIXES)


@contextmanager
def opened(path: Path) -> Iterator[Path]:
    """Yield a directory for ``path``: itself, or a temporary extraction of a tar archive.

    Read-only commands accept an archive of a storage root; it is unpacked (mtimes, modes and
    empty directories kept, links and devices refused) into a temporary directory that is
    removed afterwards.
    """
    if not is_archive(path):
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="storscan-") as tmp:
        try:
            with tarfile.open(path) as tar:
                tar.extractall(tmp, filter="data")
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise NotARegistryError(f"{path}: cannot unpack the archive ({exc})") from exc
        yield Path(tmp)
