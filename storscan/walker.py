"""The walk of subtrees: repository directory trees, or blob prefix directories.

In the default (fast) mode digests come from directory names and a link file is only
stat'ed: a valid sha256 link is exactly 71 bytes, and any other size is read and classified.
``deep`` mode (the audit) reads every link and compares it with its directory. Nothing here
raises on a damaged tree: each problem becomes a Finding and the walk goes on.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any

from storscan import layout as L
from storscan.findings import Finding
from storscan.inventory import Blob, Repo, Tag, Upload
from storscan.manifest import Manifest, ManifestError, parse_created, parse_manifest, to_wire
from storscan.storage import DIR, FILE, OTHER, SYMLINK, Entry, Storage

MAX_MANIFEST_BYTES = 4 << 20  # the registry refuses larger manifests
MAX_CONFIG_BYTES = 8 << 20
MAX_SMALL_FILE = 4096
_PROBLEM_TEXT = {
    "empty": "is empty",
    "malformed": "does not hold a digest",
    "trailing_newline": "ends with a newline",
}
# Which garbage-collect run stops on an unreadable link of each kind (2.8 reads tag links
# only with --delete-untagged, and never reads layer links; 3.x reads layer links too).
_WHO_ABORTS = {
    "revision link": "the registry's GC aborts on it",
    "tag link": "pulls of the tag fail and GC --delete-untagged aborts on it",
    "tag index link": "the registry's GC --delete-untagged may abort on it",
    "layer link": "registry 3.x's GC aborts on it (2.8 ignores it)",
}


@dataclass
class WalkPart:
    """What a walker found in its subtrees; merged once all workers are done."""

    repos: list[Repo] = field(default_factory=list)
    blobs: dict[str, Blob] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    files: int = 0
    # Manifests read during the blob walk, in wire form (None: unreadable or unparsable,
    # with a finding): digest -> manifest.
    manifests: dict[str, tuple[Any, ...] | None] = field(default_factory=dict)

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        # The blobs travel between processes as plain tuples: pickling a named tuple calls
        # back into Python each way, seconds for a registry of a million blobs.
        return _part_from_wire, (
            self.repos,
            list(self.blobs),
            [tuple(blob) for blob in self.blobs.values()],
            self.findings,
            self.files,
            self.manifests,
        )


def _part_from_wire(
    repos: list[Repo],
    blob_digests: list[str],
    blob_values: list[tuple[int, float]],
    findings: list[Finding],
    files: int,
    manifests: dict[str, tuple[Any, ...] | None],
) -> WalkPart:
    blobs = dict(zip(blob_digests, map(partial(tuple.__new__, Blob), blob_values), strict=True))
    return WalkPart(repos, blobs, findings, files, manifests)


def _link_expected_size(alg: str) -> int:
    return len(alg) + 1 + L.HEX_LENGTHS[alg]


class Walker:
    """Walks subtrees into one WalkPart; instances are not shared between threads."""

    def __init__(self, storage: Storage, deep: bool, complete: bool = True) -> None:
        self.s = storage
        self.deep = deep
        # complete=False (the report) skips what no figure needs: tag history and layer links.
        self.complete = complete or deep
        self.part = WalkPart()

    def finding(self, code: str, message: str, **kw: object) -> None:
        self.part.findings.append(Finding(code, message, **kw))  # type: ignore[arg-type]

    def listing(self, rel: str, repo: str | None = None) -> list[Entry] | None:
        """Entries of a directory; symbolic links are reported and dropped."""
        try:
            entries = self.s.list_dir(rel)
        except OSError as exc:
            self.finding(
                "unreadable",
                f"cannot list {rel}: {exc.strerror}; fix its permissions",
                repository=repo,
                path=rel,
            )
            return None
        if entries is None:
            return None
        self.part.files += len(entries)
        if all(e.kind in (DIR, FILE) for e in entries):
            return entries  # an Entry is a (name, kind) tuple already
        out = []
        for e in entries:
            if e.kind == SYMLINK:
                self.finding(
                    "symlink_skipped",
                    f"symbolic link {rel}/{e.name} not followed; registry storage holds "
                    "none: replace it with the real file or directory",
                    repository=repo,
                    path=f"{rel}/{e.name}",
                )
            elif e.kind == OTHER:
                self.finding(
                    "unexpected_entry",
                    f"{rel}/{e.name} is a FIFO, socket or device, not part of the registry "
                    "layout; not read: remove it",
                    repository=repo,
                    path=f"{rel}/{e.name}",
                )
            else:
                out.append(e)
        return out

    # -- links ---------------------------------------------------------------------------

    def check_link(
        self,
        rel: str,
        expect: str | None,
        repo: str | None,
        *,
        what: str,
        tag: str | None = None,
        read: bool = False,
    ) -> tuple[str | None, float | None, bool]:
        """Check a link file; return (digest it yields, mtime, sound), mtime None when absent.

        ``expect`` is the digest named by the link's directory (None for tags' current/link).
        The digest returned is the content's when it parses, else ``expect`` (the directory
        still names the object, which keeps its target live while the audit flags the link).
        """
        st = self.s.stat(rel)
        if st is None:
            return None, None, True
        if st.kind != FILE:
            self.finding(
                "link_not_regular",
                f"{what} {rel} is not a regular file; the registry "
                "cannot read it: replace it with a link file",
                repository=repo,
                tag=tag,
                digest=expect,
                path=rel,
            )
            return expect, st.mtime, False
        alg = L.split_digest(expect)[0] if expect else L.CANONICAL_ALG
        if not read and not self.deep and st.size == _link_expected_size(alg):
            return expect, st.mtime, True
        try:
            content = self.s.read_small(rel, MAX_SMALL_FILE) or b""
        except OSError as exc:
            self.finding(
                "unreadable",
                f"cannot read {rel}: {exc.strerror}",
                repository=repo,
                tag=tag,
                digest=expect,
                path=rel,
            )
            return expect, st.mtime, False
        digest, problem = L.classify_link(content)
        if problem is not None:
            recovered = content.decode("ascii", "replace").strip()
            if problem == "trailing_newline":
                digest = recovered
            self.finding(
                f"link_{problem}",
                f"{what} {rel} {_PROBLEM_TEXT[problem]}; {_WHO_ABORTS[what]}: "
                f"rewrite it to hold the digest{' ' + expect if expect else ''} with no newline",
                repository=repo,
                tag=tag,
                digest=expect or digest,
                path=rel,
                bytes=st.size,
            )
            return expect, st.mtime, False
        if expect is not None and digest != expect and L.split_digest(expect)[0] == L.CANONICAL_ALG:
            self.finding(
                "link_mismatch",
                f"{what} {rel} holds {digest}, not the digest of its "
                "directory; the registry rejects it: remove the link or fix its content",
                repository=repo,
                tag=tag,
                digest=expect,
                path=rel,
            )
            return expect, st.mtime, False
        return digest, st.mtime, True

    # -- repositories --------------------------------------------------------------------

    def discover(self, rel: str, name: str) -> None:
        """Walk a directory under repositories/: it is a repository if it holds a marker.

        Depth first in name order, with a stack rather than recursion: a damaged tree may
        nest directories deeper than Python's recursion limit.
        """
        stack = [(rel, name)]
        while stack:
            rel, name = stack.pop()
            entries = self.listing(rel)
            if entries is None:
                continue
            names = {n for n, k in entries if k == DIR}
            markers = frozenset(m for m in L.MARKERS if m in names)
            if markers:
                self.part.repos.append(self.walk_repo(rel, name, markers, entries))
            children = [
                (f"{rel}/{child}", f"{name}/{child}" if name else child)
                for child, kind in sorted(entries)
                if kind == DIR and not child.startswith("_")
            ]
            stack.extend(reversed(children))

    def walk_repo(self, rel: str, name: str, markers: frozenset[str], entries: list[Entry]) -> Repo:
        repo = Repo(name, markers)
        for child, _kind in entries:
            if child.startswith("_") and child not in L.MARKERS:
                self.finding(
                    "unexpected_entry",
                    f"{rel}/{child} is not part of the registry layout; move it out of the tree",
                    repository=name,
                    path=f"{rel}/{child}",
                )
        if L.MANIFESTS in markers:
            manifests_dir = dict(self.listing(f"{rel}/{L.MANIFESTS}", name) or [])
            repo.has_revisions_dir = manifests_dir.get("revisions") == DIR
            self.walk_revisions(repo, f"{rel}/{L.MANIFESTS}/revisions")
            self.walk_tags(repo, f"{rel}/{L.MANIFESTS}/tags")
        if L.LAYERS in markers and self.complete:
            self.walk_layers(repo, f"{rel}/{L.LAYERS}")
        if L.UPLOADS in markers:
            self.walk_uploads(repo, f"{rel}/{L.UPLOADS}")
        return repo

    def digest_dirs(self, rel: str, repo: str) -> Iterable[tuple[str, str, str]]:
        """(alg, hex, path) for each ``<alg>/<hex>`` directory under ``rel``."""
        for alg, kind in self.listing(rel, repo) or []:
            if kind != DIR or alg not in L.HEX_LENGTHS:
                self.finding(
                    "unexpected_entry",
                    f"{rel}/{alg} is not a digest algorithm directory; the registry ignores it",
                    repository=repo,
                    path=f"{rel}/{alg}",
                )
                continue
            for hexname, hkind in self.listing(f"{rel}/{alg}", repo) or []:
                path = f"{rel}/{alg}/{hexname}"
                if hkind != DIR or not L.is_hex_name(hexname, alg):
                    self.finding(
                        "unexpected_entry",
                        f"{path} is not a digest directory; the registry ignores it",
                        repository=repo,
                        path=path,
                    )
                    continue
                yield alg, hexname, path

    def walk_revisions(self, repo: Repo, rel: str) -> None:
        for alg, hexname, path in self.digest_dirs(rel, repo.name):
            expect = sys.intern(f"{alg}:{hexname}")
            _, mtime, sound = self.check_link(
                f"{path}/link", expect, repo.name, what="revision link"
            )
            if mtime is None:
                self.finding(
                    "revision_dir_empty",
                    f"{path} has no link (left by an API delete); harmless, prune removes it",
                    repository=repo.name,
                    digest=expect,
                    path=path,
                )
                continue
            if not sound:
                repo.bad("revisions")
            repo.revisions[expect] = mtime

    def walk_tags(self, repo: Repo, rel: str) -> None:
        entries = self.listing(rel, repo.name)
        if entries is None:
            return
        repo.has_tags_dir = True
        for tag, kind in entries:
            path = f"{rel}/{tag}"
            if kind != DIR:
                self.finding(
                    "unexpected_entry",
                    f"{path} is not a tag directory",
                    path=path,
                    repository=repo.name,
                )
                continue
            if L.TAG_RE.fullmatch(tag) is None:
                self.finding(
                    "unexpected_entry",
                    f"tag directory {path} is not a valid tag name; the registry lists it but "
                    "cannot serve it by name: remove it (storscan prune --tag)",
                    repository=repo.name,
                    tag=tag,
                    path=path,
                )
            digest, mtime, sound = self.check_link(
                f"{path}/current/link", None, repo.name, what="tag link", tag=tag, read=True
            )
            if not sound:
                repo.bad("tags")
            history: list[str] = []
            index_dirs = self.digest_dirs(f"{path}/index", repo.name) if self.complete else ()
            for alg, hexname, ipath in index_dirs:
                hdigest = f"{alg}:{hexname}"
                if self.deep:
                    _, _, sound = self.check_link(
                        f"{ipath}/link", hdigest, repo.name, what="tag index link", tag=tag
                    )
                    if not sound:
                        repo.bad("index")
                history.append(sys.intern(hdigest))
            if mtime is None:
                self.finding(
                    "tag_without_current",
                    f"tag directory {path} has no current/link; "
                    "it is not a tag: remove it (storscan prune --tag)",
                    repository=repo.name,
                    tag=tag,
                    path=path,
                )
            repo.tags[tag] = Tag(tag, sys.intern(digest) if digest else None, mtime, tuple(history))

    def walk_layers(self, repo: Repo, rel: str) -> None:
        for alg, hexname, path in self.digest_dirs(rel, repo.name):
            expect = f"{alg}:{hexname}"
            is_alias = alg != L.CANONICAL_ALG
            digest, mtime, sound = self.check_link(
                f"{path}/link", expect, repo.name, what="layer link", read=is_alias
            )
            if not sound:
                repo.bad("layers")
            if mtime is None or digest is None:
                continue
            if is_alias:
                repo.alias_links[expect] = sys.intern(digest)
                self.finding(
                    "layer_link_alias",
                    f"{path}/link is an alias for {digest}",
                    repository=repo.name,
                    digest=expect,
                    path=f"{path}/link",
                )
            else:
                repo.layer_links.add(sys.intern(expect))

    def walk_uploads(self, repo: Repo, rel: str) -> None:
        for upload_id, kind in self.listing(rel, repo.name) or []:
            path = f"{rel}/{upload_id}"
            if kind != DIR:
                continue
            total, newest = self.tree_bytes(path, repo.name)
            started = None
            try:
                raw = self.s.read_small(f"{path}/startedat", 256)
            except OSError:
                raw = None  # unreadable: the registry never purges it either
            if raw:
                try:
                    started = datetime.fromisoformat(
                        raw.decode("ascii").strip().replace("Z", "+00:00")
                    )
                except (UnicodeDecodeError, ValueError):
                    started = None
            repo.uploads.append(Upload(upload_id, total, started, newest))

    def tree_bytes(self, rel: str, repo: str) -> tuple[int, float]:
        """Total bytes of the files below ``rel`` and the newest mtime (no recursion limit)."""
        total, newest = 0, 0.0
        stack = [rel]
        while stack:
            directory = stack.pop()
            for name, kind in self.listing(directory, repo) or []:
                path = f"{directory}/{name}"
                if kind == DIR:
                    stack.append(path)
                    continue
                st = self.s.stat(path)
                if st is not None:
                    total += st.size
                    newest = max(newest, st.mtime)
        return total, newest

    # -- blobs ---------------------------------------------------------------------------

    def walk_blob_prefix(self, alg: str, prefix: str, manifests: frozenset[str]) -> None:
        """Stat each blob of one prefix directory, and read those of ``manifests`` there.

        A manifest read right after its blob's directory lies next to what the walk just
        read; read later, in digest order, each would be a seek of its own on a cold cache.
        """
        rel = f"{L.BLOBS}/{alg}/{prefix}"
        for hexname, kind in self.listing(rel) or []:
            path = f"{rel}/{hexname}"
            if kind != DIR or not L.is_hex_name(hexname, alg) or not hexname.startswith(prefix):
                self.finding(
                    "gc_blob_path_abort",
                    f"{path} is not a blob directory; the "
                    "registry's GC aborts on it: move it out of blobs/",
                    path=path,
                )
                continue
            if self.deep:
                for name, _ in self.listing(path) or []:
                    if name != "data":
                        self.finding(
                            "temp_file",
                            f"{path}/{name} is not a blob's data; "
                            "left by an interrupted write: remove it",
                            path=f"{path}/{name}",
                        )
            st = self.s.stat(f"{path}/data")
            if st is None:
                self.finding(
                    "blob_dir_empty",
                    f"{path} holds no data; remove the directory",
                    digest=f"{alg}:{hexname}",
                    path=path,
                )
                continue
            if st.kind != FILE:
                self.finding(
                    "link_not_regular",
                    f"{path}/data is not a regular file; not followed",
                    digest=f"{alg}:{hexname}",
                    path=f"{path}/data",
                )
                continue
            digest = sys.intern(f"{alg}:{hexname}")
            self.part.blobs[digest] = Blob(st.size, st.mtime)
            if digest in manifests:
                self.read_manifest(digest, st.size)

    def read_manifest(self, digest: str, size: int) -> None:
        """Read and parse one manifest blob into the part (None and a finding if it fails)."""
        man, problem = read_manifest(self.s, digest, size)
        self.part.manifests[digest] = man and to_wire(man)
        if problem is not None:
            self.part.findings.append(problem)


def blob_prefixes(walker: Walker) -> list[tuple[str, str]]:
    out = []
    for alg, kind in walker.listing(L.BLOBS) or []:
        if kind != DIR or alg not in L.HEX_LENGTHS:
            walker.finding(
                "gc_blob_path_abort",
                f"{L.BLOBS}/{alg} is not a digest algorithm "
                "directory; the registry's GC aborts on it: move it out of blobs/",
                path=f"{L.BLOBS}/{alg}",
            )
            continue
        for prefix, pkind in walker.listing(f"{L.BLOBS}/{alg}") or []:
            if pkind != DIR or len(prefix) != 2:
                walker.finding(
                    "gc_blob_path_abort",
                    f"{L.BLOBS}/{alg}/{prefix} is not a blob "
                    "prefix directory; move it out of blobs/",
                    path=f"{L.BLOBS}/{alg}/{prefix}",
                )
                continue
            out.append((alg, prefix))
    return out


def read_manifest(
    storage: Storage, digest: str, size: int
) -> tuple[Manifest | None, Finding | None]:
    rel = L.blob_data(digest)
    try:
        body = storage.read_small(rel, MAX_MANIFEST_BYTES + 1) or b""
    except OSError as exc:
        return None, Finding(
            "unreadable", f"cannot read manifest {rel}: {exc.strerror}", digest=digest, path=rel
        )
    alg, hexpart = L.split_digest(digest)
    if hashlib.new(alg, body).hexdigest() != hexpart:
        return None, Finding(
            "manifest_digest_mismatch",
            f"manifest blob {rel} does not hash to "
            f"{digest}; it is corrupt: restore it from a backup or delete the "
            "image",
            digest=digest,
            path=rel,
            bytes=size,
        )
    try:
        return parse_manifest(digest, body), None
    except ManifestError as exc:
        return None, Finding(
            "manifest_unparsable",
            f"manifest {rel} cannot be loaded ({exc}); "
            "the registry's GC aborts on it: delete the image or restore the blob",
            digest=digest,
            path=rel,
            bytes=size,
        )


def read_created(storage: Storage, digest: str) -> str | None:
    try:
        body = storage.read_small(L.blob_data(digest), MAX_CONFIG_BYTES)
    except OSError:
        return None
    return parse_created(body) if body else None
