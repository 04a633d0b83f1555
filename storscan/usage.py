"""The figures: per-repository total / exclusive / shared bytes and the registry summary.

All sizes are integer bytes: the ``st_size`` of blob ``data`` files; absent blobs count 0.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from operator import itemgetter

from storscan.reach import Reach
from storscan.scan import Inventory, Repo

SCOPES = ("all", "tagged")
# A repository's fields in JSON, CSV and Markdown (scripts depend on these names).
REPO_FIELDS = (
    "name",
    "tags",
    "manifests",
    "untagged_manifests",
    "total_bytes",
    "exclusive_bytes",
    "shared_bytes",
    "blobs",
    "uploads",
    "upload_bytes",
    "newest_created",
    "latest_push",
)
SCHEMA_VERSION = 1


@dataclass(frozen=True)
class RepoUsage:
    """One repository's row of the report."""

    name: str
    tags: int
    manifests: int
    untagged_manifests: int
    total_bytes: int
    exclusive_bytes: int
    shared_bytes: int
    blobs: int
    uploads: int
    upload_bytes: int
    newest_created: str | None
    latest_push: str | None
    markers: tuple[str, ...]


@dataclass(frozen=True)
class Summary:
    """Registry-wide figures."""

    repositories: int
    tags: int
    manifests: int
    untagged_manifests: int
    blobs: int
    blob_bytes: int
    referenced_bytes: int
    unreferenced_blobs: int
    unreferenced_bytes: int
    untagged_only_bytes: int
    uploads: int
    upload_bytes: int
    dedup_ratio: float | None


@dataclass(frozen=True)
class Usage:
    """The report's data for one scope."""

    scope: str
    repositories: list[RepoUsage]
    summary: Summary
    unreferenced: dict[str, int]  # digest -> bytes of present blobs outside every `all` set


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def _parse_time(text: str) -> datetime | None:
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def newest_created(inv: Inventory, reach: Reach, repo: Repo) -> str | None:
    """``created`` of the most recently pushed image of ``repo`` (the newest of its platforms)."""
    best: tuple[datetime, str] | None = None
    newest = reach.newest_image(repo)
    for config in reach.image_configs(newest) if newest else ():
        created = inv.created.get(config)
        parsed = _parse_time(created) if created else None
        if parsed is not None and created is not None and (best is None or parsed > best[0]):
            best = (parsed, created)
    return best[1] if best else None


def latest_push(repo: Repo) -> float | None:
    """The newest tag or revision link mtime."""
    times = [t.mtime for t in repo.tags.values() if t.mtime is not None]
    times.extend(repo.revisions.values())
    return max(times) if times else None


def _total(sizes: dict[str, int], blobs: set[str]) -> int:
    return sum(map(sizes.__getitem__, blobs))


def _owned_once(sets: Iterable[set[str]]) -> tuple[set[str], set[str]]:
    """(the union of ``sets``, the blobs exactly one of them holds), by set operations in C
    rather than a count per blob."""
    seen: set[str] = set()
    again: set[str] = set()
    for blob_set in sets:
        again |= blob_set & seen  # iterates over the smaller of the two sets
        seen |= blob_set
    return seen, seen - again


def compute(inv: Inventory, scope: str = "all", reach: Reach | None = None) -> Usage:
    """Compute every figure of the report for ``scope`` (``all`` or ``tagged``)."""
    reach = reach or Reach(inv)
    sizes = dict(zip(inv.blobs, map(itemgetter(0), inv.blobs.values()), strict=True))
    all_sets = {name: reach.all_set(repo) for name, repo in inv.repos.items()}
    kept = {name: reach.keep_from_tags(repo) for name, repo in inv.repos.items()}
    tagged_sets = {name: reach.blobs_of_many(kept[name]) for name in inv.repos}
    union_all, single_all = _owned_once(all_sets.values())
    union_tagged, single_tagged = _owned_once(tagged_sets.values())
    sets, single = (all_sets, single_all) if scope == "all" else (tagged_sets, single_tagged)

    rows = []
    for name, repo in inv.repos.items():
        blob_set = sets[name]
        total = _total(sizes, blob_set)
        exclusive = _total(sizes, blob_set & single)  # & iterates over the smaller set
        rows.append(
            RepoUsage(
                name=name,
                tags=len(repo.valid_tags),
                manifests=len(repo.revisions),
                untagged_manifests=sum(1 for d in repo.revisions if d not in kept[name]),
                total_bytes=total,
                exclusive_bytes=exclusive,
                shared_bytes=total - exclusive,
                blobs=len(blob_set),
                uploads=len(repo.uploads),
                upload_bytes=sum(u.bytes for u in repo.uploads),
                newest_created=newest_created(inv, reach, repo),
                latest_push=_iso(latest_push(repo)),
                markers=tuple(sorted(repo.markers)),
            )
        )

    referenced_bytes = _total(sizes, union_all)
    union_bytes = referenced_bytes if scope == "all" else _total(sizes, union_tagged)
    unreferenced = {d: sizes[d] for d in sorted(sizes.keys() - union_all)}
    summary = Summary(
        repositories=len(rows),
        tags=sum(r.tags for r in rows),
        manifests=sum(r.manifests for r in rows),
        untagged_manifests=sum(r.untagged_manifests for r in rows),
        blobs=len(inv.blobs),
        blob_bytes=sum(sizes.values()),
        referenced_bytes=referenced_bytes,
        unreferenced_blobs=len(unreferenced),
        unreferenced_bytes=sum(unreferenced.values()),
        untagged_only_bytes=_total(sizes, union_all - union_tagged),
        uploads=sum(r.uploads for r in rows),
        upload_bytes=sum(r.upload_bytes for r in rows),
        dedup_ratio=round(sum(r.total_bytes for r in rows) / union_bytes, 4)
        if union_bytes
        else None,
    )
    return Usage(scope, rows, summary, unreferenced)
