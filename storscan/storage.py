"""The small storage interface the walk runs on, and its local-filesystem implementation.

The walk only lists directories, reads small files and stats files. Keeping it to these three
calls lets an object-storage backend (S3 lists keys by prefix) be added as a second
implementation without touching the walk. Paths are relative to the ``v2`` directory.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from typing import NamedTuple, Protocol

DIR = "dir"
FILE = "file"
SYMLINK = "symlink"
OTHER = "other"


class Entry(NamedTuple):
    """One directory entry; ``kind`` is one of DIR, FILE, SYMLINK, OTHER."""

    name: str
    kind: str


class FileStat(NamedTuple):
    """Size and modification time of a regular file (symbolic links are never followed)."""

    size: int
    mtime: float
    kind: str


class Storage(Protocol):
    """What the walk needs from a storage backend."""

    def describe(self, rel: str) -> str:
        """A path a person can find the object at (for messages)."""
        ...

    def list_dir(self, rel: str) -> list[Entry] | None:
        """Entries of a directory, or None when it does not exist. Raises OSError otherwise."""
        ...

    def read_small(self, rel: str, limit: int) -> bytes | None:
        """Up to ``limit`` bytes of a regular file, or None when it does not exist."""
        ...

    def stat(self, rel: str) -> FileStat | None:
        """Size and mtime of a file without following links, or None when it does not exist."""
        ...

    def iter_chunks(self, rel: str, chunk: int = 1 << 20) -> Iterator[bytes]:
        """The whole content of a file, in chunks (used for hashing blobs)."""
        ...


def _kind_of_entry(entry: os.DirEntry[str]) -> str:
    # d_type answers these without a stat call on Linux filesystems; directories and
    # regular files (nearly every entry) are settled by the first or second test.
    if entry.is_dir(follow_symlinks=False):
        return DIR
    if entry.is_file(follow_symlinks=False):
        return FILE
    return SYMLINK if entry.is_symlink() else OTHER


def _kind_of_mode(mode: int) -> str:
    if mode & 0o170000 == stat.S_IFREG:
        return FILE
    if stat.S_ISDIR(mode):
        return DIR
    if stat.S_ISLNK(mode):
        return SYMLINK
    return OTHER


def _open_regular(path: str) -> int:
    """Open a regular file for reading, or raise OSError.

    O_NOFOLLOW: a symbolic link is never followed out of the tree. O_NONBLOCK: a FIFO in its
    place cannot hang the walk; anything but a regular file is refused after the open.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, "not a regular file", path)
    return fd


class LocalStorage:
    """Storage on a local (or mounted network) filesystem."""

    def __init__(self, v2: str) -> None:
        self.v2 = v2.rstrip("/")

    def path(self, rel: str) -> str:
        return f"{self.v2}/{rel}" if rel else self.v2

    def describe(self, rel: str) -> str:
        return self.path(rel)

    def list_dir(self, rel: str) -> list[Entry] | None:
        try:
            with os.scandir(self.path(rel)) as it:
                return [Entry(e.name, _kind_of_entry(e)) for e in it]
        except FileNotFoundError:
            return None
        except NotADirectoryError:
            return None

    def read_small(self, rel: str, limit: int) -> bytes | None:
        try:
            fd = _open_regular(self.path(rel))
        except FileNotFoundError:
            return None
        try:
            # os.read allocates its whole argument up front: read in modest steps instead.
            chunks = []
            remaining = limit
            while remaining > 0:
                chunk = os.read(fd, min(remaining, 65536))
                if not chunk:
                    break
                chunks.append(chunk)
                remaining -= len(chunk)
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)
        finally:
            os.close(fd)

    def stat(self, rel: str) -> FileStat | None:
        try:
            st = os.lstat(self.path(rel))
        except (FileNotFoundError, NotADirectoryError):
            return None
        return FileStat(st.st_size, st.st_mtime, _kind_of_mode(st.st_mode))

    def iter_chunks(self, rel: str, chunk: int = 1 << 20) -> Iterator[bytes]:
        fd = _open_regular(self.path(rel))
        with os.fdopen(fd, "rb") as fh:
            while block := fh.read(chunk):
                yield block
