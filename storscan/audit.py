"""The pre-GC audit: broken images, damaged links, orphans, stale uploads, GC hazards.

The walk already reported what is wrong with single files; this step adds what needs the
whole graph: missing blobs named by the image they break, and what the registry's own GC
would get wrong on this tree.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from storscan import layout as L
from storscan.findings import CODES, SEVERITY_RANK, Finding
from storscan.gcmodel import V28, predict
from storscan.manifest import SCHEMA1_KIND
from storscan.reach import Reach, short
from storscan.scan import Inventory, Repo
from storscan.storage import LocalStorage
from storscan.usage import SCHEMA_VERSION

DEFAULT_UPLOAD_AGE = timedelta(hours=168)


@dataclass
class AuditResult:
    """All findings, worst first, with counts."""

    findings: list[Finding]

    def counts(self) -> dict[str, Any]:
        by_sev = {sev: 0 for sev in ("error", "warning", "info")}
        by_code: dict[str, int] = {}
        for f in self.findings:
            by_sev[f.severity] += 1
            by_code[f.code] = by_code.get(f.code, 0) + 1
        return {**by_sev, "by_code": dict(sorted(by_code.items()))}

    def as_dict(self, root: str) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "root": root,
            "findings": [f.as_dict() for f in self.findings],
            "counts": self.counts(),
        }


def _image_tags(reach: Reach, repo: Repo) -> dict[str, str]:
    """Manifest -> the first tag (by name) that reaches it, index children included.

    A missing layer of a multi-arch child breaks the tagged image people pull, so findings
    name that image rather than the child's bare digest.
    """
    out: dict[str, str] = {}
    for tag, digest in sorted(repo.valid_tags.items()):
        for mdigest in reach.manifests_of(digest):
            out.setdefault(mdigest, tag)
    return out


def _broken_images(inv: Inventory, reach: Reach, repo: Repo) -> Iterable[Finding]:
    tags = repo.valid_tags
    image_tags = _image_tags(reach, repo)
    for tag, digest in sorted(tags.items()):
        if digest not in inv.blobs:
            yield Finding(
                "tag_manifest_missing",
                f"{repo.name}:{tag} points to {short(digest)} "
                "whose manifest blob is missing; the tag cannot be pulled: push it "
                "again or remove the tag",
                repository=repo.name,
                tag=tag,
                digest=digest,
                path=L.tag_current_link(repo.name, tag),
            )
        elif digest not in repo.revisions:
            yield Finding(
                "tag_revision_missing",
                f"{repo.name}:{tag} points to {short(digest)} "
                "which has no revision link in the repository; pulls fail and GC "
                "deletes it: push the image again",
                repository=repo.name,
                tag=tag,
                digest=digest,
                path=L.tag_current_link(repo.name, tag),
            )
    for digest in sorted(repo.revisions):
        if digest not in inv.blobs:
            yield Finding(
                "revision_manifest_missing",
                f"{repo.name}@{short(digest)}: revision "
                "link to a missing manifest blob; remove it (storscan prune "
                f"--manifest {digest})",
                repository=repo.name,
                digest=digest,
                path=L.revision_dir(repo.name, digest),
            )
            continue
        image_tag = image_tags.get(digest)
        image = f"{repo.name}:{image_tag}" if image_tag else f"{repo.name}@{digest}"
        yield from _missing_refs(inv, reach, repo, digest, image, image_tag)


def _missing_refs(
    inv: Inventory, reach: Reach, repo: Repo, digest: str, image: str, tag: str | None
) -> Iterable[Finding]:
    for mdigest in sorted(reach.manifests_of(digest)):
        man = inv.manifests.get(mdigest)
        if mdigest != digest and mdigest not in inv.blobs:
            yield Finding(
                "blob_missing",
                f"image {image} is broken: child manifest "
                f"{short(mdigest)} is missing; push the image again",
                repository=repo.name,
                tag=tag,
                digest=mdigest,
            )
        if man is None or (mdigest != digest and mdigest in repo.revisions):
            continue  # a child that is itself a revision is checked on its own
        sized = man.kind != SCHEMA1_KIND  # schema1 descriptors carry no size (-1)
        for ref in man.blob_refs:
            blob = inv.blobs.get(ref.digest)
            if blob is None and not ref.foreign:
                yield Finding(
                    "blob_missing",
                    f"image {image} is broken: blob {short(ref.digest)} "
                    f"({ref.media_type or 'layer'}) is missing; push the image again",
                    repository=repo.name,
                    tag=tag,
                    digest=ref.digest,
                    path=L.blob_data(ref.digest),
                )
            elif blob is not None and ref.size != blob.size and (ref.size >= 0 or sized):
                yield Finding(
                    "descriptor_size_mismatch",
                    f"image {image}: manifest says "
                    f"{short(ref.digest)} has {ref.size} bytes, the blob has {blob.size}; "
                    "pulls fail: push the image again",
                    repository=repo.name,
                    tag=tag,
                    digest=ref.digest,
                    path=L.blob_data(ref.digest),
                    bytes=blob.size,
                )


def _repo_findings(
    inv: Inventory,
    reach: Reach,
    repo: Repo,
    now: datetime,
    upload_age: timedelta,
    tagged_union: set[str],
) -> Iterable[Finding]:
    yield from _broken_images(inv, reach, repo)
    if not repo.valid_tags and not repo.revisions:
        yield Finding(
            "repository_empty",
            f"repository {repo.name} has no tags or manifests; "
            f"remove it (storscan prune --repo {repo.name} --delete-repo)",
            repository=repo.name,
            path=L.repo_dir(repo.name),
        )
    for digest in sorted(repo.layer_links):
        if digest not in inv.blobs:
            yield Finding(
                "layer_link_dangling",
                f"{repo.name}: layer link to missing blob "
                f"{short(digest)}; the registry may claim the layer exists: "
                "storscan gc --apply removes it",
                repository=repo.name,
                digest=digest,
                path=L.layer_link(repo.name, digest),
            )
    kept = reach.keep_from_tags(repo)
    for digest in sorted(d for d in repo.revisions if d not in kept and d in inv.blobs):
        freed = reach.blobs_of(digest) - tagged_union
        yield Finding(
            "manifest_untagged",
            f"{repo.name}@{short(digest)} is untagged; removing "
            "it (storscan prune --untagged) and collecting garbage frees the bytes "
            "shown",
            repository=repo.name,
            digest=digest,
            path=L.revision_dir(repo.name, digest),
            bytes=sum(inv.blobs[b].size for b in freed),
        )
    for up in repo.uploads:
        path = L.upload_dir(repo.name, up.id)
        if up.started is None:
            yield Finding(
                "upload_no_startedat",
                f"upload {up.id} of {repo.name} has no readable "
                "startedat; the registry never purges it: storscan prune "
                "--uploads-older-than removes it",
                repository=repo.name,
                path=path,
                bytes=up.bytes,
            )
        elif now - up.started > upload_age:
            yield Finding(
                "upload_stale",
                f"upload {up.id} of {repo.name} started "
                f"{up.started:%Y-%m-%d %H:%M}Z and was never finished; remove it "
                "(storscan prune --uploads-older-than)",
                repository=repo.name,
                path=path,
                bytes=up.bytes,
            )
        else:
            yield Finding(
                "upload",
                f"upload {up.id} of {repo.name} is in progress",
                repository=repo.name,
                path=path,
                bytes=up.bytes,
            )


def _gc_hazards(inv: Inventory, reach: Reach) -> Iterable[Finding]:
    if inv.repos or inv.blobs:
        if not inv.has_repositories:
            yield Finding(
                "gc_no_repositories_abort",
                "repositories/ is missing or not a directory; the registry's GC aborts: make it an "
                "empty directory",
                path=L.REPOSITORIES,
            )
        if not inv.has_blobs:
            yield Finding(
                "gc_no_blobs_abort",
                "blobs/ is missing or not a directory; the registry's GC aborts: make it an "
                "empty directory",
                path=L.BLOBS,
            )
    for repo in inv.repos.values():
        if not L.valid_repository_name(repo.name):
            yield Finding(
                "gc_repo_name_abort",
                f"{repo.name} is not a valid repository name; "
                "the registry's GC aborts on it: rename or remove the directory",
                repository=repo.name,
                path=L.repo_dir(repo.name),
            )
    plain28 = predict(inv, V28)
    for name in plain28.skipped_repos:
        repo = inv.repos[name]
        if L.MANIFESTS not in repo.markers:
            continue
        lost = reach.all_set(repo) & plain28.eligible_blobs
        yield Finding(
            "gc28_repo_skipped",
            f"repository {name} has no _layers: registry 2.8's GC "
            f"does not see it and would delete {len(lost)} blobs its images need; "
            "use storscan gc, or create its _layers directory",
            repository=name,
            path=L.repo_dir(name),
            bytes=sum(inv.blobs[b].size for b in lost),
        )
        yield Finding(
            "gc3_no_layers_abort",
            f"repository {name} has no _layers: registry 3.x's "
            "GC aborts on it; create the empty directory "
            f"{L.repo_dir(name)}/{L.LAYERS}",
            repository=name,
            path=L.repo_dir(name),
        )
    untagged28 = predict(inv, V28, delete_untagged=True)
    queued = set(untagged28.eligible_manifests)
    for repo in inv.repos.values():
        kept = reach.keep_from_tags(repo)
        for digest in sorted(kept):
            if (repo.name, digest) not in queued:
                continue
            lost = set(reach.blobs_of(digest)) & untagged28.eligible_blobs
            yield Finding(
                "gc28_untagged_child",
                f"{repo.name}@{short(digest)} is needed "
                f"({kept[digest]}) but registry 2.8's garbage-collect "
                "--delete-untagged would delete its revision and "
                f"{len(lost)} of its blobs; use storscan gc --delete-untagged instead",
                repository=repo.name,
                digest=digest,
                bytes=sum(inv.blobs[b].size for b in lost),
            )
    for man in inv.manifests.values():
        if man.kind == SCHEMA1_KIND:
            yield Finding(
                "gc3_schema1_abort",
                f"schema1 manifest {short(man.digest)}: registry "
                "3.x cannot read it and its GC aborts; re-push the image as schema2 "
                "before upgrading",
                digest=man.digest,
                path=L.blob_data(man.digest),
            )


def _verify_blobs(inv: Inventory, jobs: int) -> Iterable[Finding]:
    storage = LocalStorage(str(inv.root.v2))

    def check(digest: str) -> Finding | None:
        alg, hexpart = L.split_digest(digest)
        hasher = hashlib.new(alg)
        try:
            for chunk in storage.iter_chunks(L.blob_data(digest)):
                hasher.update(chunk)
        except OSError as exc:
            return Finding(
                "unreadable",
                f"cannot read blob {digest}: {exc.strerror}",
                digest=digest,
                path=L.blob_data(digest),
            )
        if hasher.hexdigest() == hexpart:
            return None
        return Finding(
            "blob_digest_mismatch",
            f"blob {short(digest)} does not hash to its "
            "digest; it is corrupt: every image using it is broken, push them again",
            digest=digest,
            path=L.blob_data(digest),
            bytes=inv.blobs[digest].size,
        )

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        for finding in pool.map(check, sorted(inv.blobs), chunksize=64):
            if finding is not None:
                yield finding


def audit(
    inv: Inventory,
    *,
    now: datetime,
    upload_age: timedelta = DEFAULT_UPLOAD_AGE,
    verify: bool = False,
    jobs: int = 4,
) -> AuditResult:
    """Every finding for an Inventory (walk it with ``deep=True`` for link checks)."""
    reach = Reach(inv)
    tagged_union: set[str] = set()
    all_union: set[str] = set()
    for repo in inv.repos.values():
        tagged_union |= reach.tagged_set(repo)
        all_union |= reach.all_set(repo)
    findings = list(inv.findings)
    for repo in inv.repos.values():
        findings.extend(_repo_findings(inv, reach, repo, now, upload_age, tagged_union))
    findings.extend(_gc_hazards(inv, reach))
    for digest in sorted(d for d in inv.blobs if d not in all_union):
        findings.append(
            Finding(
                "blob_unreferenced",
                f"blob {short(digest)} is referenced by no manifest; garbage collection frees it",
                digest=digest,
                path=L.blob_dir(digest),
                bytes=inv.blobs[digest].size,
            )
        )
    if inv.root.storage_root.joinpath("scheduler-state.json").exists():
        findings.append(
            Finding(
                "scheduler_state",
                "scheduler-state.json of a pull-through cache "
                "lies beside docker/; storscan ignores it",
                path="../../../scheduler-state.json",
            )
        )
    if verify:
        findings.extend(_verify_blobs(inv, jobs))
    findings = list(dict.fromkeys(findings))  # a missing blob shared by images is one finding each
    findings.sort(
        key=lambda f: (
            -SEVERITY_RANK[CODES[f.code]],
            f.code,
            f.repository or "",
            f.tag or "",
            f.digest or "",
            f.path or "",
        )
    )
    return AuditResult(findings)
