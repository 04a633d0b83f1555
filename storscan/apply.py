"""Executing a Plan, reversibly: quarantine moves with a journal, restore, and the trash.

Each removed directory is renamed into ``<storage root>/.storscan/quarantine/<run id>/``,
mirroring its path below the storage root. A rename on one filesystem keeps owner, mode and
mtimes and cannot half-copy. Every move is first written to the run's journal (JSON lines,
fsync'ed), so after a crash or Ctrl-C the journal names every move that may have happened:
``restore`` skips records whose move never took place. Blobs are never moved; they become
garbage only for a GC, which is the irreversible step.
"""

from __future__ import annotations

import json
import os
import posixpath
import shutil
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from storscan import layout as L
from storscan.errors import CancelledError, RefusedError, UsageError
from storscan.lock import STATE_DIR, check_state_dir
from storscan.plan import (
    INDEX,
    REPOSITORY,
    REVISION,
    TAG,
    UPLOAD,
    Action,
    Plan,
    empty_revision_dirs,
    v2_prefix,
)
from storscan.reach import Reach, short
from storscan.root import Root
from storscan.scan import Inventory
from storscan.usage import latest_push

QUARANTINE = f"{STATE_DIR}/quarantine"
JOURNAL = "journal.jsonl"
RUN_INFO = "run.json"

StopFn = Callable[[], bool]


def never() -> bool:
    """The stop function of a run that cannot be interrupted."""
    return False


class StopFlag:
    """Set by Ctrl-C; long loops check it between units of work."""

    def __init__(self) -> None:
        self.hit = False

    def __call__(self) -> bool:
        return self.hit


@contextmanager
def interruptible() -> Iterator[StopFlag]:
    """Turn Ctrl-C into a flag for the duration of a mutating loop (main thread only)."""
    flag = StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        flag.hit = True

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


def new_run_id(now: datetime | None = None) -> str:
    """A sortable, unique quarantine name: ``20261204T164542Z-3f9a1c``."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{os.urandom(3).hex()}"


def quarantine_dir(root: Root, run_id: str) -> Path:
    return root.storage_root / QUARANTINE / run_id


# -- checking a saved plan ------------------------------------------------------------------


def expected_paths(action: Action, prefix: str) -> set[str]:
    """Where an action of this kind, repository, tag and digest may legitimately point."""
    repo = action.repository
    if action.kind == TAG and action.tag:
        return {prefix + L.tag_dir(repo, action.tag)}
    if action.kind == INDEX and action.tag and action.digest:
        return {prefix + L.tag_index_dir(repo, action.tag, action.digest)}
    if action.kind == REVISION and action.digest:
        return {prefix + L.revision_dir(repo, action.digest)}
    if action.kind == REPOSITORY:
        base = prefix + L.repo_dir(repo)
        return {base} | {f"{base}/{m}" for m in L.MARKERS}
    if action.kind == UPLOAD:
        upload_id = posixpath.basename(action.path)
        return {prefix + L.upload_dir(repo, upload_id)} if upload_id else set()
    return set()


def observe(inv: Inventory, action: Action) -> tuple[bool, str | None, float | None]:
    """(present, link, mtime) of an action's object in the tree as ``inv`` saw it."""
    repo = inv.repos.get(action.repository)
    if repo is None:
        return False, None, None
    if action.kind == TAG:
        tag = repo.tags.get(action.tag or "")
        return (True, tag.digest, tag.mtime) if tag else (False, None, None)
    if action.kind == INDEX:
        tag = repo.tags.get(action.tag or "")
        here = tag is not None and action.digest in tag.history
        return (True, action.digest, None) if here else (False, None, None)
    if action.kind == REVISION and action.digest:
        if action.digest in repo.revisions:
            return True, action.digest, repo.revisions[action.digest]
        empty = (repo.name, action.digest) in empty_revision_dirs(inv)
        return empty, None, None
    if action.kind == UPLOAD:
        upload_id = posixpath.basename(action.path)
        for up in repo.uploads:
            if up.id == upload_id:
                return True, None, up.mtime
        return False, None, None
    return True, None, latest_push(repo)


def check_plan(plan: Plan, inv: Inventory) -> None:
    """Refuse the whole plan unless every path lies inside ROOT and nothing changed since."""
    here = inv.root.storage_root.resolve()
    if Path(plan.root).resolve() != here:
        raise RefusedError(
            f"the plan was made for {plan.root}, not {here}; plan again on this root"
        )
    prefix = v2_prefix(inv)
    changed: list[str] = []
    for a in plan.actions:
        normal = posixpath.normpath(a.path)
        if a.path.startswith("/") or normal != a.path or a.path not in expected_paths(a, prefix):
            raise RefusedError(
                f"plan action {a.path!r} is not the {a.kind} path it claims to be or lies "
                "outside ROOT; refusing the whole plan: plan again with --plan-out"
            )
        present, link, mtime = observe(inv, a)
        if not present:
            changed.append(f"{a.path} is gone")
        elif link != a.link or mtime != a.mtime:
            now_link = short(link) if link else "no link"
            changed.append(f"{a.path} changed (now {now_link}, mtime {mtime})")
    if changed:
        more = f" and {len(changed) - 1} more" if len(changed) > 1 else ""
        raise RefusedError(
            f"the tree changed since the plan was made: {changed[0]}{more}; refusing the whole "
            "plan: run storscan prune again and review the new plan"
        )


# -- apply ----------------------------------------------------------------------------------


@dataclass
class ApplyResult:
    """What one apply moved, and what was already gone when its turn came."""

    run_id: str
    quarantine: Path
    moved: list[Action] = field(default_factory=list)
    missing: list[Action] = field(default_factory=list)


def _write_record(journal: TextIO, record: dict[str, Any]) -> None:
    journal.write(json.dumps(record, sort_keys=True) + "\n")
    journal.flush()
    os.fsync(journal.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def apply_plan(root: Root, plan: Plan, *, run_id: str, stop: StopFn = never) -> ApplyResult:
    """Move every action's directory into the quarantine, journaling each move first."""
    check_state_dir(root.storage_root)
    qdir = quarantine_dir(root, run_id)
    qdir.mkdir(parents=True)
    info = {"run_id": run_id, "time": _now_text(), "root": plan.root, "selection": plan.selection}
    (qdir / RUN_INFO).write_text(json.dumps(info, indent=2) + "\n")
    result = ApplyResult(run_id, qdir)
    with (qdir / JOURNAL).open("a", encoding="utf-8") as journal:
        _fsync_dir(qdir)
        for n, action in enumerate(plan.actions):
            if stop():
                raise CancelledError(
                    f"interrupted after {n} of {len(plan.actions)} moves; the journal "
                    f"{qdir / JOURNAL} lists them: storscan restore {root.storage_root} {run_id} "
                    "puts them back, or run the prune again to finish"
                )
            src = root.storage_root / action.path
            if not os.path.lexists(src):
                result.missing.append(action)
                continue
            dst = qdir / action.path
            dst.parent.mkdir(parents=True, exist_ok=True)
            _write_record(journal, _record(action, src, dst, root))
            os.rename(src, dst)
            result.moved.append(action)
    return result


def _now_text() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _record(action: Action, src: Path, dst: Path, root: Root) -> dict[str, Any]:
    return {
        "op": "move",
        "src": src.relative_to(root.storage_root).as_posix(),
        "dst": dst.relative_to(root.storage_root).as_posix(),
        "kind": action.kind,
        "repository": action.repository,
        "tag": action.tag,
        "digest": action.digest,
        "time": _now_text(),
    }


# -- restore --------------------------------------------------------------------------------


def read_journal(root: Root, run_id: str) -> list[dict[str, Any]]:
    """The move records of one run; a torn last line (crash mid-write) is ignored."""
    qdir = quarantine_dir(root, run_id)
    if "/" in run_id or run_id in ("", ".", "..") or not (qdir / JOURNAL).is_file():
        raise UsageError(
            f"no quarantine {run_id!r} under {root.storage_root / QUARANTINE}; "
            f"storscan trash {root.storage_root} lists them"
        )
    records = []
    for line in (qdir / JOURNAL).read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and record.get("op") == "move":
            records.append(record)
    return records


def _inside(root: Root, rel: str, under: str) -> Path:
    """``rel`` as a path below the storage root, refused unless it lies below ``under``."""
    parts = Path(rel).parts
    outside = not rel.startswith(under) if under else rel.startswith(STATE_DIR + "/")
    if rel.startswith("/") or ".." in parts or outside:
        raise RefusedError(
            f"journal path {rel!r} does not lie under {under or 'the tree'}; the journal was "
            "edited: "
            "restore by hand"
        )
    return root.storage_root / rel


@dataclass
class RestoreResult:
    """What a restore put back and which of its records had nothing left to restore."""

    restored: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)


def restore(root: Root, run_id: str, *, stop: StopFn = never) -> RestoreResult:
    """Put a run's quarantined directories back; refuse before moving anything if one of
    their places is taken again (a tag pushed again since, for example)."""
    records = read_journal(root, run_id)
    v2 = root.v2_prefix
    qdir_rel = f"{QUARANTINE}/{run_id}/"
    pairs = [(r, _inside(root, r["src"], v2), _inside(root, r["dst"], qdir_rel)) for r in records]
    for _, src, dst in pairs:
        if os.path.lexists(src) and os.path.lexists(dst):
            raise RefusedError(
                f"{src} exists again (pushed since the prune?); restoring would overwrite it: "
                f"move it aside or keep it and restore the rest by hand from {dst}"
            )
    result = RestoreResult()
    # Reverse order: a revision returns before the tag that names it.
    for record, src, dst in reversed(pairs):
        if stop():
            raise CancelledError(
                f"interrupted after restoring {len(result.restored)} items; run "
                f"storscan restore {root.storage_root} {run_id} again to finish"
            )
        if not os.path.lexists(dst):
            result.skipped.append(record)  # never moved, or already restored
            continue
        src.parent.mkdir(parents=True, exist_ok=True)
        os.rename(dst, src)
        result.restored.append(record)
    qdir = quarantine_dir(root, run_id)
    if not any(p.is_file() or p.is_symlink() for p in qdir.rglob("*") if p.parent != qdir):
        shutil.rmtree(qdir)
    return result


def missing_blobs(inv: Inventory, repos: set[str]) -> dict[str, list[str]]:
    """Blobs the images of ``repos`` need that are gone: digest -> images (repo:tag)."""
    reach = Reach(inv)
    out: dict[str, list[str]] = {}
    for name in sorted(repos):
        repo = inv.repos.get(name)
        if repo is None:
            continue
        roots = {d: f"{name}:{t}" for t, d in sorted(repo.valid_tags.items(), reverse=True)}
        for digest in repo.revisions:
            roots.setdefault(digest, f"{name}@{short(digest)}")
        for digest, image in sorted(roots.items()):
            for mdigest in sorted(reach.manifests_of(digest)):
                man = inv.manifests.get(mdigest)
                needed = [mdigest] + [
                    r.digest for r in (man.blob_refs if man else ()) if not r.foreign
                ]
                for blob in needed:
                    if blob not in inv.blobs:
                        out.setdefault(blob, []).append(image)
    return out


# -- the trash ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Quarantine:
    """One apply's quarantine directory."""

    run_id: str
    time: datetime | None
    items: int
    bytes: int
    path: Path


def _tree_bytes(path: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(path):
        for name in files:
            if Path(dirpath) == path and name in (JOURNAL, RUN_INFO):
                continue
            total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


def _run_time(qdir: Path) -> datetime | None:
    try:
        info = json.loads((qdir / RUN_INFO).read_text(encoding="utf-8"))
        return datetime.fromisoformat(str(info["time"]).replace("Z", "+00:00"))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def list_quarantines(root: Root) -> list[Quarantine]:
    """Every quarantine under the storage root, oldest first."""
    base = root.storage_root / QUARANTINE
    if not base.is_dir():
        return []
    out = []
    for qdir in sorted(p for p in base.iterdir() if p.is_dir() and not p.is_symlink()):
        journal = qdir / JOURNAL
        items = len(journal.read_text(encoding="utf-8").splitlines()) if journal.is_file() else 0
        out.append(Quarantine(qdir.name, _run_time(qdir), items, _tree_bytes(qdir), qdir))
    return out


def purge(quarantines: list[Quarantine], stop: StopFn = never) -> list[Quarantine]:
    """Delete quarantines for good; returns those deleted (stops between runs on Ctrl-C)."""
    done = []
    for q in quarantines:
        if stop():
            break
        shutil.rmtree(q.path)
        done.append(q)
    return done
