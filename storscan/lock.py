"""The exclusive lock every command that changes the tree holds: ``<storage root>/.storscan/lock``.

The file holds JSON (host, pid, start time) and is created with O_EXCL, so two runs can never
both hold it. A lock whose process is gone on this host is stale and taken over with a
warning; a lock from another host can only be broken by hand (``storscan break-lock``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

from storscan.errors import RefusedError

log = logging.getLogger("storscan")

STATE_DIR = ".storscan"
LOCK_NAME = f"{STATE_DIR}/lock"


@dataclass(frozen=True)
class LockInfo:
    """Who holds a lock."""

    host: str
    pid: int
    started: str
    command: str = ""

    def describe(self) -> str:
        what = f" ({self.command})" if self.command else ""
        return f"pid {self.pid} on host {self.host} since {self.started}{what}"


def lock_path(storage_root: Path) -> Path:
    return storage_root / LOCK_NAME


def check_state_dir(storage_root: Path) -> None:
    """Refuse when ``.storscan`` (or what lies inside it) is not a plain directory.

    A symbolic link there would send the lock and the quarantine out of the tree.
    """
    state = storage_root / STATE_DIR
    for path in (state, state / "quarantine"):
        if path.is_symlink() or (path.exists() and not path.is_dir()):
            raise RefusedError(
                f"{path} is not a plain directory (a symbolic link or a file); storscan keeps "
                "its lock and quarantines there: move it aside and run again"
            )
    lock = storage_root / LOCK_NAME
    if lock.is_symlink() or (lock.exists() and not lock.is_file()):
        raise RefusedError(f"{lock} is not a regular file; move it aside and run again")


def read_lock(storage_root: Path) -> LockInfo | None:
    """The current holder, None when unlocked; an unreadable lock file counts as held."""
    try:
        text = lock_path(storage_root).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        data = json.loads(text)
        return LockInfo(
            str(data["host"]), int(data["pid"]), str(data["started"]), str(data.get("command", ""))
        )
    except (ValueError, KeyError, TypeError):
        return LockInfo("?", -1, "?", "unreadable lock file")


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, owned by someone else
    return True


def is_stale(info: LockInfo) -> bool:
    """A lock is stale when its process is gone on this host (other hosts cannot be checked)."""
    return info.host == socket.gethostname() and info.pid > 0 and not pid_alive(info.pid)


class Lock:
    """Context manager holding the storage root's lock."""

    def __init__(self, storage_root: Path, command: str) -> None:
        self.storage_root = storage_root
        self.command = command
        self.info: LockInfo | None = None
        self._made_state_dir = False

    def acquire(self) -> None:
        check_state_dir(self.storage_root)
        path = lock_path(self.storage_root)
        self._made_state_dir = not path.parent.exists()
        path.parent.mkdir(exist_ok=True)
        for _attempt in range(2):
            info = LockInfo(
                socket.gethostname(),
                os.getpid(),
                datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
                self.command,
            )
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                holder = read_lock(self.storage_root)
                if holder is not None and is_stale(holder):
                    log.warning("removing a stale lock of %s", holder.describe())
                    path.unlink(missing_ok=True)
                    continue
                who = holder.describe() if holder else "another run"
                raise RefusedError(
                    f"{self.storage_root} is locked by {who}; wait for that run to finish, or if "
                    f"it is dead run storscan break-lock {self.storage_root}"
                ) from None
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(info.__dict__, fh)
                fh.flush()
                os.fsync(fh.fileno())
            self.info = info
            return
        raise RefusedError(f"could not take the lock {path}; run storscan break-lock and retry")

    def release(self) -> None:
        if self.info is None:
            return
        holder = read_lock(self.storage_root)
        if holder is not None and (holder.host, holder.pid) == (self.info.host, self.info.pid):
            lock_path(self.storage_root).unlink(missing_ok=True)
        if self._made_state_dir:
            # A run that was refused or declined leaves no trace; a quarantine keeps it.
            with contextlib.suppress(OSError):
                lock_path(self.storage_root).parent.rmdir()
        self.info = None

    def __enter__(self) -> Lock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def break_lock(storage_root: Path, *, force: bool = False) -> LockInfo | None:
    """Remove the lock; refuse when its holder is alive on this host unless ``force``."""
    check_state_dir(storage_root)
    holder = read_lock(storage_root)
    if holder is None:
        return None
    alive_here = holder.host == socket.gethostname() and pid_alive(holder.pid)
    if alive_here and not force:
        raise RefusedError(
            f"the lock is held by {holder.describe()}, which is running; stop that process "
            "first (or pass --force if you are sure it is not storscan)"
        )
    lock_path(storage_root).unlink(missing_ok=True)
    return holder


def _writable(path: Path) -> bool:
    return os.access(path, os.W_OK | os.X_OK)


def check_writable(storage_root: Path, v2: Path) -> None:
    """Refuse early when this user cannot change the tree."""
    for path in (storage_root, v2):
        if not _writable(path):
            raise RefusedError(
                f"no write access to {path}; run storscan as the owner of the registry's "
                "storage (e.g. with sudo -u)"
            )
