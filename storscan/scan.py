"""The walk: one pass over a v2 tree into an Inventory of repositories, tags, revisions and blobs.

Costs grow with the number of files, never with tags x manifests, and each manifest blob is
read once whatever number of repositories link it. The tree is cut into subtrees (repository
directories and blob prefix directories); ``jobs`` walkers share them out. Each walker is a
process of its own: parsing then uses every core, and with more walkers than cores a slow,
cold or network filesystem has several reads in flight. Threads did worse: measured on a cold
page cache, two processes of two threads each lost 6 to 14% to four single-threaded ones,
contending for the interpreter lock at every system call.
"""

from __future__ import annotations

import logging
import multiprocessing
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from functools import partial
from typing import TypeVar

from storscan import layout as L
from storscan.collector import collector_paused
from storscan.inventory import Blob, Inventory, Repo, Tag, Upload
from storscan.manifest import from_wire
from storscan.reach import Reach
from storscan.root import Root
from storscan.storage import DIR, LocalStorage
from storscan.walker import Walker, WalkPart, blob_prefixes, read_created

__all__ = ["Blob", "Inventory", "Repo", "Tag", "Upload", "scan"]

log = logging.getLogger(__name__)
ProgressFn = Callable[[str], None]
T = TypeVar("T")
R = TypeVar("R")
# ProcessPoolExecutor's limit on Windows; more walkers than this only lengthen the disk's queue.
MAX_WALKERS = 61
BlobTask = tuple[str, str, frozenset[str]]  # alg, prefix, manifests to read there


def _threaded(fn: Callable[[T], R], items: Sequence[T], threads: int) -> list[R]:
    if threads <= 1 or len(items) <= 1:
        return [fn(item) for item in items]
    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(fn, items))


def _walk_repositories(v2: str, deep: bool, complete: bool, names: list[str]) -> list[WalkPart]:
    """Walk a share of the repository subtrees (runs in a worker process)."""
    storage = LocalStorage(v2)
    parts = []
    for name in names:
        walker = Walker(storage, deep, complete)
        walker.discover(f"{L.REPOSITORIES}/{name}", name)
        parts.append(walker.part)
    return parts


def _walk_blobs(v2: str, deep: bool, tasks: list[BlobTask]) -> list[WalkPart]:
    """Walk a share of the blob prefix directories (runs in a worker process)."""
    walker = Walker(LocalStorage(v2), deep)
    for task in tasks:
        walker.walk_blob_prefix(*task)
    return [walker.part]


def _parse_batch(v2: str, items: list[tuple[str, int]]) -> list[WalkPart]:
    """Read and parse a share of the manifests (runs in a worker process)."""
    walker = Walker(LocalStorage(v2), deep=False)
    for digest, size in items:
        walker.read_manifest(digest, size)
    return [walker.part]


def _created_batch(v2: str, digests: list[str]) -> list[tuple[str, str | None]]:
    """The ``created`` time of a share of image configs."""
    storage = LocalStorage(v2)
    return [(digest, read_created(storage, digest)) for digest in digests]


def _shares(items: Sequence[T], count: int) -> list[list[T]]:
    """Cut ``items`` into at most ``count`` contiguous runs of about equal length.

    Neighbouring subtrees were usually written together, so their inodes lie close on disk:
    a worker reading a contiguous run gets the filesystem's read-ahead, which matters most
    when the tree is not in the page cache.
    """
    if not items:
        return []
    size = -(-len(items) // max(1, count))
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


class _Workers:
    """Runs functions over shares of work: in worker processes, or here when jobs is 1."""

    def __init__(self, jobs: int) -> None:
        self.procs = max(1, min(jobs, MAX_WALKERS))
        self.pool: Executor | None = None
        if self.procs > 1:
            methods = multiprocessing.get_all_start_methods()
            context = multiprocessing.get_context("fork" if "fork" in methods else None)
            self.pool = ProcessPoolExecutor(max_workers=self.procs, mp_context=context)

    def run(self, fn: Callable[[list[T]], list[R]], items: Sequence[T]) -> list[R]:
        """``fn`` over shares of ``items``; shares go to whichever worker is free."""
        shares = _shares(items, self.procs * 8)
        if self.pool is None:
            results = [fn(share) for share in shares]
        else:
            results = list(self.pool.map(fn, shares))
        return [r for result in results for r in result]

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()


def _repository_tasks(top: Walker) -> list[str]:
    """The repository subtrees to hand out: each top-level directory, except that namespace
    directories (those holding no repository of their own, like ``team`` in ``team/app``)
    are opened here and their children handed out instead. A namespace of a thousand
    repositories would otherwise be one walker's task while the others sit idle.
    """

    def probe(name: str) -> tuple[str, bool]:
        try:
            entries = top.s.list_dir(f"{L.REPOSITORIES}/{name}")
        except OSError:
            return name, True  # the walker reports it
        is_repo = entries is None or any(n in L.MARKERS and k == DIR for n, k in entries)
        return name, is_repo

    tasks: list[str] = []
    level = [
        name
        for name, kind in top.listing(L.REPOSITORIES) or []
        if kind == DIR and not name.startswith("_")
    ]
    while level:
        namespaces = []
        for name, is_repo in _threaded(probe, sorted(level), 8):
            if is_repo:
                tasks.append(name)
            else:
                namespaces.append(name)
        level = [
            f"{ns}/{child}"
            for ns in namespaces
            for child, kind in top.listing(f"{L.REPOSITORIES}/{ns}") or []
            if kind == DIR and not child.startswith("_")
        ]
    return sorted(tasks)


def _present(storage: LocalStorage, rel: str) -> bool:
    try:
        return storage.list_dir(rel) is not None
    except OSError:
        return True  # there but unreadable: the walk reports it as such


def _merge(inv: Inventory, parts: Iterable[WalkPart]) -> None:
    for part in parts:
        for repo in part.repos:
            inv.repos[repo.name] = repo
        inv.blobs.update(part.blobs)
        inv.findings.extend(part.findings)
        inv.files_seen += part.files
        for digest, wire in part.manifests.items():
            if wire is not None:
                inv.manifests[digest] = from_wire(wire)


def _manifests_by_prefix(roots: set[str]) -> dict[tuple[str, str], frozenset[str]]:
    """The manifest digests to read during the blob walk, by (alg, prefix) directory."""
    grouped: dict[tuple[str, str], set[str]] = {}
    for digest in roots:
        alg, hexpart = L.split_digest(digest)
        grouped.setdefault((alg, hexpart[:2]), set()).add(digest)
    return {key: frozenset(digests) for key, digests in grouped.items()}


def _parse_manifests(workers: _Workers, v2: str, inv: Inventory, seen: set[str]) -> None:
    """Read the present manifests that the blob walk did not: index children, found only
    once their index is parsed, and their own children in turn. ``seen`` holds the digests
    already read, whether or not they parsed."""
    pending = {c.digest for m in inv.manifests.values() for c in m.children} - seen
    while pending := {d for d in pending if d in inv.blobs}:
        seen |= pending
        parts = workers.run(
            partial(_parse_batch, v2), [(d, inv.blobs[d].size) for d in sorted(pending)]
        )
        _merge(inv, parts)
        parsed = [inv.manifests[d] for part in parts for d in part.manifests if d in inv.manifests]
        pending = {c.digest for man in parsed for c in man.children} - seen
    # By digest: the blob walk adds them in directory-listing order.
    inv.manifests = dict(sorted(inv.manifests.items()))


def _read_created(workers: _Workers, v2: str, inv: Inventory) -> None:
    """``created`` of the image configs of each repository's most recently pushed image.

    One image per repository rather than every config: on a cold cache each config read is
    a random read, and these are as many as the manifests themselves.
    """
    reach = Reach(inv)
    wanted: set[str] = set()
    for repo in inv.repos.values():
        newest = reach.newest_image(repo)
        wanted.update(reach.image_configs(newest) if newest else ())
    for digest, created in workers.run(partial(_created_batch, v2), sorted(wanted)):
        if created:
            inv.created[digest] = created


def scan(
    root: Root,
    *,
    jobs: int = 4,
    deep: bool = False,
    complete: bool = True,
    progress: ProgressFn | None = None,
) -> Inventory:
    """Walk the tree at ``root`` and return its Inventory.

    ``deep`` reads and checks every link (the audit); ``complete=False`` skips the tag
    history and the layer links, which no figure of the report needs.
    """
    with collector_paused():
        return _scan(root, jobs=jobs, deep=deep, complete=complete, progress=progress)


def _scan(
    root: Root, *, jobs: int, deep: bool, complete: bool, progress: ProgressFn | None
) -> Inventory:
    started = time.perf_counter()
    v2 = str(root.v2)
    storage = LocalStorage(v2)
    top = Walker(storage, deep, complete)
    inv = Inventory(
        root,
        {},
        {},
        {},
        {},
        [],
        has_repositories=_present(storage, L.REPOSITORIES),
        has_blobs=_present(storage, L.BLOBS),
        deep=deep,
        complete=complete,
    )
    if root.empty:
        inv.elapsed = time.perf_counter() - started
        return inv
    names = _repository_tasks(top)
    prefixes = blob_prefixes(top)
    workers = _Workers(max(1, jobs))
    try:
        # Repositories first: they name the manifests, which the blob walk then reads as it
        # passes their directories.
        if progress is not None:
            progress(f"walking {len(names)} repositories with {jobs} walkers")
        _merge(
            inv,
            [
                top.part,
                *workers.run(partial(_walk_repositories, v2, deep, complete), names),
            ],
        )
        inv.repos = dict(sorted(inv.repos.items()))
        repos_walked = time.perf_counter()
        roots: set[str] = set()
        for repo in inv.repos.values():
            roots.update(repo.revisions)
            roots.update(t.digest for t in repo.tags.values() if t.digest)
        wanted = _manifests_by_prefix(roots)
        if progress is not None:
            progress(f"walking {len(prefixes)} blob directories, reading {len(roots)} manifests")
        blob_tasks = [
            (alg, prefix, wanted.get((alg, prefix), frozenset())) for alg, prefix in prefixes
        ]
        parts = workers.run(partial(_walk_blobs, v2, deep), blob_tasks)
        _merge(inv, parts)
        walked = time.perf_counter()
        _parse_manifests(workers, v2, inv, {d for part in parts for d in part.manifests})
        _read_created(workers, v2, inv)
    finally:
        workers.close()
    inv.elapsed = time.perf_counter() - started
    log.debug(
        "repositories %.3f s, blobs and manifests %.3f s, the rest %.3f s (%d processes)",
        repos_walked - started,
        walked - repos_walked,
        inv.elapsed - (walked - started),
        workers.procs,
    )
    return inv
