"""The report's figures computed from the push log with plain set arithmetic.

This is the specification of issue 2 written as code, independent of storscan: per repository a
set of present blobs under a scope, ``exclusive`` = the part in no other repository's set.

* ``all``: every revision of the repository (a manifest pushed there and not deleted through
  the API) keeps its manifest blob, its config and layers, and an index's children recursively.
* ``tagged``: the manifests the final tags point at, the children of kept indexes, and (by a
  fixpoint within the repository) revisions whose ``subject`` is kept.

Every blob and manifest body the fixture pushed is stored under ``blobs/`` (an API delete
leaves the blob), so "present" means "in the push log" unless a test removed it.
"""

from __future__ import annotations

from typing import Any

Pushed = dict[str, Any]
SCOPES = ("all", "tagged")

# Beside each unfinished upload's data, distribution 2.8 keeps `startedat` (RFC 3339 in UTC with
# second precision, "2006-01-02T15:04:05Z": 20 bytes) and the resumable sha256 state (Go's
# crypto/sha256 MarshalBinary: 4 magic + 32 state + 64 block + 8 length = 108 bytes), saved at
# offset 0 when the upload starts and again at the offset its PATCH reached.
UPLOAD_OVERHEAD = 20 + 2 * 108

# regenerate.py builds every image config with image_config()'s default `created`.
CONFIG_CREATED = "2024-01-01T00:00:00Z"


def _under(repo: str, prefixes: tuple[str, ...]) -> bool:
    return any(repo == p or repo.startswith(p + "/") for p in prefixes)


class Oracle:
    """Expected figures for the demo tree, optionally with some repository directories removed."""

    def __init__(self, pushed: Pushed, removed: tuple[str, ...] = ()) -> None:
        self.sizes: dict[str, int] = {b["digest"]: b["size"] for b in pushed["blobs"]}
        self.sizes.update({m["digest"]: m["size"] for m in pushed["manifests"]})
        self.manifests: dict[str, dict[str, Any]] = {m["digest"]: m for m in pushed["manifests"]}
        self.repos = sorted(r for r in pushed["repositories"] if not _under(r, removed))
        self.pushed_repos: dict[str, dict[str, Any]] = pushed["repositories"]
        self.revisions = {
            repo: {
                m["digest"] for m in pushed["manifests"] if m["repo"] == repo and not m["deleted"]
            }
            for repo in self.repos
        }
        self.tags: dict[str, dict[str, str]] = {
            repo: pushed["final_tags"].get(repo, {}) for repo in self.repos
        }
        self.uploads = {
            repo: [u["bytes"] for u in pushed["unfinished_uploads"] if u["repo"] == repo]
            for repo in self.repos
        }

    # -- reachability ---------------------------------------------------------------------------

    def manifest_closure(self, digest: str) -> set[str]:
        """``digest`` and every index child below it."""
        out, stack = set(), [digest]
        while stack:
            d = stack.pop()
            if d not in out:
                out.add(d)
                stack.extend(self.manifests[d]["children"] if d in self.manifests else [])
        return out

    def blobs_of(self, digest: str) -> set[str]:
        """Present blobs a manifest keeps: itself, children, their configs and layers."""
        out: set[str] = set()
        for d in self.manifest_closure(digest):
            out.add(d)
            rec = self.manifests.get(d)
            if rec is not None and not rec["children"]:
                out.update(rec["references"])  # config and layers
        return out & self.sizes.keys()

    def kept(self, repo: str) -> set[str]:
        """Manifests the tags of ``repo`` keep (scope ``tagged``)."""
        kept = set(self.tags[repo].values())
        while True:
            grown = set().union(*(self.manifest_closure(d) for d in kept)) if kept else set()
            grown |= {d for d in self.revisions[repo] if self.manifests[d]["subject"] in grown}
            if grown == kept:
                return kept
            kept = grown

    def blob_set(self, repo: str, scope: str) -> set[str]:
        roots = self.revisions[repo] if scope == "all" else self.kept(repo)
        return (
            set().union(*(self.blobs_of(d) for d in roots if d in self.sizes)) if roots else set()
        )

    def union(self, scope: str) -> set[str]:
        return set().union(*(self.blob_set(r, scope) for r in self.repos))

    def bytes(self, digests: set[str]) -> int:
        return sum(self.sizes[d] for d in digests)

    # -- the figures ----------------------------------------------------------------------------

    def markers(self, repo: str) -> list[str]:
        """Reserved directories of ``repo``: every repository that received a blob through an
        upload keeps an (empty) ``_uploads`` (fixtures/README.md)."""
        info = self.pushed_repos[repo]
        found = {
            "_layers": bool(info["layer_links"]),
            "_manifests": info["has_manifests"],
            "_uploads": bool(info["layer_links"]) or info["has_uploads"],
        }
        return sorted(name for name, present in found.items() if present)

    def row(self, repo: str, scope: str) -> dict[str, int]:
        """The per-repository figures (those with an exact integer value)."""
        mine = self.blob_set(repo, scope)
        others = set().union(*(self.blob_set(r, scope) for r in self.repos if r != repo))
        total, exclusive = self.bytes(mine), self.bytes(mine - others)
        return {
            "tags": len(self.tags[repo]),
            "manifests": len(self.revisions[repo]),
            "untagged_manifests": len(self.revisions[repo] - self.kept(repo)),
            "total_bytes": total,
            "exclusive_bytes": exclusive,
            "shared_bytes": total - exclusive,
            "blobs": len(mine),
            "uploads": len(self.uploads[repo]),
            "upload_bytes": sum(b + UPLOAD_OVERHEAD for b in self.uploads[repo]),
        }

    def unreferenced(self) -> set[str]:
        """Present blobs outside every ``all`` set: what a correct GC frees now."""
        return set(self.sizes) - self.union("all")

    def summary(self, scope: str) -> dict[str, Any]:
        rows = [self.row(r, scope) for r in self.repos]
        union_all, union_tagged = self.union("all"), self.union("tagged")
        scope_bytes = self.bytes(union_all if scope == "all" else union_tagged)
        return {
            "repositories": len(self.repos),
            "tags": sum(r["tags"] for r in rows),
            "manifests": sum(r["manifests"] for r in rows),
            "untagged_manifests": sum(r["untagged_manifests"] for r in rows),
            "blobs": len(self.sizes),
            "blob_bytes": self.bytes(set(self.sizes)),
            "referenced_bytes": self.bytes(union_all),
            "unreferenced_blobs": len(self.unreferenced()),
            "unreferenced_bytes": self.bytes(self.unreferenced()),
            "untagged_only_bytes": self.bytes(union_all - union_tagged),
            "uploads": sum(r["uploads"] for r in rows),
            "upload_bytes": sum(r["upload_bytes"] for r in rows),
            "dedup_ratio": sum(r["total_bytes"] for r in rows) / scope_bytes,
        }
