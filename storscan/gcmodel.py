"""A model of the registry's own ``garbage-collect``: what 2.8 and 3.x would mark, skip or abort on.

storscan never copies these decisions; it predicts them to warn before an operator runs the
registry's GC, and to cross-check the registry's dry run before delegating a sweep to it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from storscan import layout as L
from storscan.manifest import SCHEMA1_KIND
from storscan.scan import Inventory, Repo

V28 = "2.8"
V3 = "3"


@dataclass
class GCPrediction:
    """What one run of the registry's GC would do."""

    version: str
    delete_untagged: bool
    aborts: list[str] = field(default_factory=list)
    skipped_repos: list[str] = field(default_factory=list)
    marked: set[str] = field(default_factory=set)
    eligible_manifests: list[tuple[str, str]] = field(default_factory=list)  # (repo, digest)
    eligible_blobs: set[str] = field(default_factory=set)


def visible(repo: Repo, version: str) -> bool:
    """Whether the registry's repository walk finds ``repo`` (its marker directory)."""
    return (L.LAYERS if version == V28 else L.MANIFESTS) in repo.markers


def predict(inv: Inventory, version: str = V28, delete_untagged: bool = False) -> GCPrediction:
    """Simulate the mark phase of the registry's GC (section 3 of the storage reference)."""
    pred = GCPrediction(version, delete_untagged)
    if not inv.has_repositories:
        pred.aborts.append("Path not found: /docker/registry/v2/repositories")
    if not inv.has_blobs:
        pred.aborts.append("Path not found: /docker/registry/v2/blobs")
    queued: list[tuple[str, str]] = []
    for repo in inv.repos.values():
        if not visible(repo, version):
            pred.skipped_repos.append(repo.name)
            continue
        if not L.valid_repository_name(repo.name):
            pred.aborts.append(f"failed to parse repo name {repo.name}")
        if repo.bad_links.get("revisions"):
            pred.aborts.append(f"{repo.name}: unreadable revision link")
        if version == V3 and L.LAYERS not in repo.markers:
            pred.aborts.append(f"{repo.name}: Path not found: _layers")
        if version == V3 and repo.bad_links.get("layers"):
            pred.aborts.append(f"{repo.name}: unreadable layer link")
        current = set(repo.valid_tags.values())
        if delete_untagged and repo.bad_links.get("tags"):
            pred.aborts.append(f"{repo.name}: unreadable tag link")
        for digest in sorted(repo.revisions):
            if digest not in inv.blobs:
                continue  # the registry skips a revision whose blob is gone, silently
            if delete_untagged and digest not in current:
                if not repo.has_tags_dir and version == V28:
                    pred.aborts.append(f"{repo.name}: failed to retrieve tags: unknown repository")
                elif repo.has_tags_dir:
                    queued.append((repo.name, digest))
                continue
            _mark(inv, repo, digest, pred, version)
    if version == V3:
        # 3.x drops queued manifests whose digest got marked anywhere in the registry.
        queued = [(r, d) for r, d in queued if d not in pred.marked]
    pred.eligible_manifests = queued
    pred.eligible_blobs = {d for d in inv.blobs if d not in pred.marked}
    return pred


def _mark(inv: Inventory, repo: Repo, digest: str, pred: GCPrediction, version: str) -> None:
    pred.marked.add(digest)
    man = inv.manifests.get(digest)
    if man is None:
        pred.aborts.append(f"{repo.name}: failed to retrieve manifest for digest {digest}")
        return
    if man.kind == SCHEMA1_KIND and version == V3:
        pred.aborts.append(f"{repo.name}: unrecognized manifest schema version 1 ({digest})")
    for ref in man.references:
        if version == V3:
            if ref.digest in pred.marked:
                continue
            pred.marked.add(ref.digest)
            if ref.digest in repo.revisions and ref.digest in inv.blobs:
                _mark(inv, repo, ref.digest, pred, version)
        else:
            pred.marked.add(ref.digest)
