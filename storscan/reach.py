"""Reachability over an Inventory: which blobs and manifests each root keeps alive.

storscan's marking differs from the registry's on purpose: index children are followed
recursively (a child counts even where it has no revision), and under the ``tagged`` scope
referrers whose ``subject`` is kept stay too.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from storscan.inventory import Inventory, Repo
from storscan.manifest import IMAGE_CONFIG_TYPES


def short(digest: str) -> str:
    """``sha256:0123456789ab`` for messages."""
    return digest[:19]


class Reach:
    """Memoised closures over one Inventory."""

    def __init__(self, inv: Inventory) -> None:
        self.inv = inv
        self._blobs: dict[str, frozenset[str]] = {}
        self._manifests: dict[str, frozenset[str]] = {}
        self._by_subject: dict[str, dict[str, list[str]]] = {}
        self._kept: dict[str, Mapping[str, str]] = {}  # keep_from_tags(repo) for all its tags

    def manifests_of(self, digest: str) -> frozenset[str]:
        """``digest`` and every manifest its index children name, recursively."""
        cached = self._manifests.get(digest)
        if cached is not None:
            return cached
        out = {digest}
        stack = [digest]
        while stack:
            man = self.inv.manifests.get(stack.pop())
            if man is None:
                continue
            for child in man.children:
                if child.digest not in out:
                    out.add(child.digest)
                    stack.append(child.digest)
        result = frozenset(out)
        self._manifests[digest] = result
        return result

    def blobs_of(self, digest: str) -> frozenset[str]:
        """Present blobs a manifest keeps alive: itself, config, layers, children's, recursively."""
        cached = self._blobs.get(digest)
        if cached is not None:
            return cached
        blobs = self.inv.blobs
        out: set[str] = set()
        for mdigest in self.manifests_of(digest):
            if mdigest in blobs:
                out.add(mdigest)
            man = self.inv.manifests.get(mdigest)
            if man is not None:
                if man.config is not None and man.config.digest in blobs:
                    out.add(man.config.digest)
                out.update(d.digest for d in man.layers if d.digest in blobs)
        result = frozenset(out)
        self._blobs[digest] = result
        return result

    def image_configs(self, digest: str) -> list[str]:
        """Present image config blobs of a manifest and of its index children."""
        out = []
        for mdigest in sorted(self.manifests_of(digest)):
            man = self.inv.manifests.get(mdigest)
            config = man.config if man is not None else None
            if (
                config
                and config.media_type in IMAGE_CONFIG_TYPES
                and config.digest in self.inv.blobs
            ):
                out.append(config.digest)
        return out

    def newest_image(self, repo: Repo) -> str | None:
        """The most recently pushed revision that is an image (artifacts such as SBOMs aside)."""
        order = sorted(repo.revisions, key=lambda d: (repo.revisions[d], d), reverse=True)
        return next((d for d in order if self.image_configs(d)), None)

    def blobs_of_many(self, digests: Iterable[str]) -> set[str]:
        """The union of ``blobs_of`` over ``digests``.

        Image manifests (nearly all) are unioned in place, without a closure of their own:
        this runs over every revision of every repository, twice per report.
        """
        manifests = self.inv.manifests
        out: set[str] = set()
        for digest in digests:
            man = manifests.get(digest)
            if man is None:
                out.add(digest)
            elif man.children:
                out |= self.blobs_of(digest)
            else:
                out.add(digest)
                if man.config is not None:
                    out.add(man.config.digest)
                out.update([layer.digest for layer in man.layers])
        return self.inv.blobs.keys() & out  # iterates over ``out``, the smaller

    def all_set(self, repo: Repo) -> set[str]:
        """Scope ``all``: blobs reachable from every revision whose manifest blob is present."""
        return self.blobs_of_many(d for d in repo.revisions if d in self.inv.blobs)

    def referrers(self, repo: Repo) -> dict[str, list[str]]:
        """Subject digest -> revisions of ``repo`` whose manifest names it as ``subject``."""
        cached = self._by_subject.get(repo.name)
        if cached is not None:
            return cached
        out: dict[str, list[str]] = {}
        for digest in repo.revisions:
            man = self.inv.manifests.get(digest)
            if man is not None and man.subject is not None:
                out.setdefault(man.subject.digest, []).append(digest)
        self._by_subject[repo.name] = out
        return out

    def keep_from_tags(self, repo: Repo, tags: Iterable[str] | None = None) -> Mapping[str, str]:
        """Manifests kept by ``tags`` of ``repo`` (all valid tags by default), with the reason.

        Kept: each tag's manifest, every index child below it, and by a fixpoint every
        revision of ``repo`` whose ``subject`` is kept (signatures, SBOMs, attestations).
        The default (all tags) is computed once per repository: usage, audit and gc all ask.
        """
        if tags is None:
            cached = self._kept.get(repo.name)
            if cached is None:
                cached = self._kept[repo.name] = self._keep(repo, repo.tags.keys())
            return cached
        return self._keep(repo, tags)

    def _keep(self, repo: Repo, names: Iterable[str]) -> dict[str, str]:
        kept: dict[str, str] = {}
        frontier: list[str] = []
        for name in sorted(names):
            digest = repo.tags[name].digest
            # A tag whose manifest has no revision link cannot be pulled and is not marked
            # by any GC: it keeps nothing (the audit reports it), so tagged stays within all.
            if digest is not None and digest not in kept and digest in repo.revisions:
                kept[digest] = f"tag {name}"
                frontier.append(digest)
        by_subject = self.referrers(repo)
        while frontier:
            new: list[str] = []
            for root in frontier:
                for child in sorted(self.manifests_of(root) - {root}):
                    if child not in kept:
                        kept[child] = f"child of {short(root)} ({kept[root]})"
                        new.append(child)
            for digest in frontier + new:
                for ref in by_subject.get(digest, ()):
                    if ref not in kept:
                        kept[ref] = f"referrer of {short(digest)} ({kept[digest]})"
                        new.append(ref)
            frontier = new
        return kept

    def tagged_set(self, repo: Repo) -> set[str]:
        """Scope ``tagged``: blobs reachable from the tags of ``repo`` (see keep_from_tags)."""
        return self.blobs_of_many(self.keep_from_tags(repo))
