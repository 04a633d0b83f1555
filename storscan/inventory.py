"""The data the walk produces: repositories, tags, revisions, blobs and uploads.

Pure data: the planning and reporting steps read only this. Records that exist by the
hundred thousand are NamedTuples: cheap to build, to hold and to send between processes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple

from storscan.findings import Finding
from storscan.manifest import Manifest
from storscan.root import Root


class Tag(NamedTuple):
    """A tag directory. ``digest`` is None when ``current/link`` is missing or unreadable."""

    name: str
    digest: str | None
    mtime: float | None
    history: tuple[str, ...] = ()


class Upload(NamedTuple):
    """An upload session directory under ``_uploads``."""

    id: str
    bytes: int
    started: datetime | None
    mtime: float


@dataclass(slots=True)
class Repo:
    """One repository directory and everything linked under its reserved directories."""

    name: str
    markers: frozenset[str]
    tags: dict[str, Tag] = field(default_factory=dict)
    revisions: dict[str, float] = field(default_factory=dict)  # digest -> link mtime
    layer_links: set[str] = field(default_factory=set)
    alias_links: dict[str, str] = field(default_factory=dict)  # alias digest -> sha256 digest
    uploads: list[Upload] = field(default_factory=list)
    has_tags_dir: bool = False
    has_revisions_dir: bool = False
    # Link files the registry cannot parse, by kind (revisions, tags, index, layers): the
    # registry's GC aborts on each kind it reads.
    bad_links: dict[str, int] = field(default_factory=dict)

    def bad(self, kind: str) -> None:
        self.bad_links[kind] = self.bad_links.get(kind, 0) + 1

    @property
    def valid_tags(self) -> dict[str, str]:
        """Tag name -> digest for tags whose current/link names a digest."""
        return {t.name: t.digest for t in self.tags.values() if t.digest is not None}


class Blob(NamedTuple):
    """A blob's ``data`` file."""

    size: int
    mtime: float


@dataclass
class Inventory:
    """Everything the walk found. Pure data: the planning and reporting steps read only this."""

    root: Root
    repos: dict[str, Repo]
    blobs: dict[str, Blob]
    manifests: dict[str, Manifest]
    created: dict[str, str]  # image config digest -> its `created` timestamp
    findings: list[Finding]
    has_repositories: bool
    has_blobs: bool
    elapsed: float = 0.0
    deep: bool = False
    complete: bool = True  # False: tag history and layer links were not walked
    files_seen: int = 0
