"""Write a synthetic distribution v2 registry tree straight to disk, fast and deterministically.

Usage::

    python benchmarks/gentree.py SHAPE DEST [--seed N] [--jobs J]

``DEST`` becomes the registry's filesystem ``rootdirectory``: the tree is written under
``DEST/docker/registry/v2/`` exactly as distribution 2.8 lays it out (blobs with a two-character
fan-out, ``_layers``/``_manifests``/``_uploads`` per repository, 71-byte link files without a
newline).
Nothing else is written inside ``DEST``; the generator's own record of what it wrote goes to
``DEST/../<DEST name>.summary.json``.

Every blob's path is the true sha256 of its body. Layer bodies are short pseudo-random bytes
(they are not real tarballs), configs are valid image config JSON, manifests are Docker schema2
(plain images) or OCI (multi-arch index children and the index itself) with exact descriptor
sizes and digests.

All content comes from ``random.Random`` seeded per repository from ``(seed, repository index)``, so
the output is identical whatever ``--jobs`` is. Mtimes follow a fixed push timeline starting at
2024-01-01T00:00:00Z (pushes one minute apart, interleaved across repositories): a file has the
time of the push that wrote it, a directory the time of its newest entry.

The module is also importable: ``generate(SHAPES["tiny"], dest)`` returns a :class:`Summary`.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import multiprocessing
import os
import random
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

GENERATOR_VERSION = 2  # bump when the output changes: run.py then regenerates

EPOCH = 1_704_067_200  # 2024-01-01T00:00:00Z: time of the first push
REGISTRY_START = EPOCH - 86_400  # the storage skeleton and the shared base layers
PUSH_STEP = 60  # seconds between two consecutive pushes in the global timeline

# Above this many blobs the summary file keeps counts only (no tag map, no digest lists).
DETAIL_LIMIT = 100_000

MT_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MT_DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
MT_DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
MT_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MT_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"

PLATFORMS: tuple[tuple[str, str], ...] = (
    ("amd64", ""),
    ("arm64", "v8"),
    ("arm", "v7"),
    ("ppc64le", ""),
    ("s390x", ""),
)

# Names of the garbage-collect semantics the summary predicts.
GC_PLAIN = "gc"  # garbage-collect (any version), without --delete-untagged
GC_UNTAGGED_28 = "gc-delete-untagged-2.8"  # 2.8: untagged and index children not marked
GC_UNTAGGED_3 = "gc-delete-untagged-3"  # 3.x: recursive marking from tagged manifests

FILE_MODE = 0o666  # what the filesystem driver asks for (the umask applies)
DIR_MODE = 0o777


@dataclass(frozen=True)
class Shape:
    """Parameters of a synthetic tree.

    ``images`` counts the image pushes (manifest revisions) per repository. Every
    ``untagged_every``-th push goes without a tag, so a repository has
    ``images - images // untagged_every`` version tags, plus ``latest`` when ``latest_history`` is
    set and ``multiarch`` when the repository gets an index.
    """

    name: str
    repositories: int
    images: int
    own_layers: int  # layers unique to each image
    shared_layers: int  # layers per image drawn from the shared pool
    pool_size: int  # number of shared base layers
    untagged_every: int  # every k-th push has no tag; 0: all pushes tagged
    latest_history: int  # 0: no `latest` tag; else `latest` moved over the last N tagged pushes
    index_every: int  # every n-th repository also gets one multi-arch OCI index; 0: none
    index_platforms: int  # children per index (each with its own config and layers)
    orphan_blobs: int  # blobs nothing links to
    layer_only_blobs: int  # blobs linked in one repository's _layers but in no manifest

    def tag_count(self) -> int:
        """Version tags per repository (without ``latest`` / ``multiarch``)."""
        if self.untagged_every <= 0:
            return self.images
        return self.images - self.images // self.untagged_every


SHAPES: dict[str, Shape] = {
    "tiny": Shape(
        name="tiny",
        repositories=5,
        images=4,
        own_layers=2,
        shared_layers=1,
        pool_size=4,
        untagged_every=4,
        latest_history=2,
        index_every=3,
        index_platforms=2,
        orphan_blobs=2,
        layer_only_blobs=1,
    ),
    "small": Shape(
        name="small",
        repositories=200,
        images=20,
        own_layers=3,
        shared_layers=2,
        pool_size=50,
        untagged_every=5,
        latest_history=3,
        index_every=50,
        index_platforms=3,
        orphan_blobs=5,
        layer_only_blobs=5,
    ),
    "medium": Shape(
        name="medium",
        repositories=700,
        images=50,
        own_layers=3,
        shared_layers=2,
        pool_size=50,
        untagged_every=5,
        latest_history=3,
        index_every=100,
        index_platforms=3,
        orphan_blobs=10,
        layer_only_blobs=10,
    ),
    "large": Shape(
        name="large",
        repositories=2000,
        images=50,
        own_layers=3,
        shared_layers=2,
        pool_size=50,
        untagged_every=5,
        latest_history=3,
        index_every=100,
        index_platforms=3,
        orphan_blobs=20,
        layer_only_blobs=20,
    ),
    "many-tags": Shape(
        name="many-tags",
        repositories=2,
        images=1875,  # every fifth untagged: 1,500 version tags per repository
        own_layers=3,
        shared_layers=2,
        pool_size=50,
        untagged_every=5,
        latest_history=10,
        index_every=2,
        index_platforms=3,
        orphan_blobs=2,
        layer_only_blobs=2,
    ),
}


@dataclass
class Eligibility:
    """What a garbage-collect run with given semantics should find on the generated tree."""

    marked: int = 0  # distinct digests marked (the "<M> blobs marked" figure)
    blobs: int = 0  # blobs eligible for deletion
    bytes: int = 0  # their total size
    manifests: int = 0  # manifests queued for deletion (only with --delete-untagged)
    digests: list[str] = field(default_factory=list)  # "sha256:<hex>" of the eligible blobs

    def gc_line(self) -> str:
        """The summary line distribution prints after marking."""
        return (
            f"{self.marked} blobs marked, {self.blobs} blobs and {self.manifests} manifests "
            "eligible for deletion"
        )


@dataclass
class Summary:
    """The generator's record of a tree it wrote."""

    shape: Shape
    seed: int
    root: str  # DEST: the registry rootdirectory
    files: int = 0
    dirs: int = 0  # directories created inside DEST
    manifests: int = 0
    blobs: int = 0
    blob_bytes: int = 0
    file_bytes: int = 0  # bytes of every file: blobs plus links
    links: int = 0
    tags: int = 0
    first_push: str = ""
    newest_push: str = ""
    seconds: float = 0.0
    in_place: bool = False  # seconds is then the time of an in-place check and update
    repositories: list[str] = field(default_factory=list)
    # repository -> tag -> "sha256:<hex>" that the tag's current/link holds
    tag_map: dict[str, dict[str, str]] = field(default_factory=dict)
    # blobs no manifest revision references (what a plain GC finds eligible)
    unreferenced_blobs: list[str] = field(default_factory=list)
    eligible: dict[str, Eligibility] = field(default_factory=dict)

    def to_json(self, detail: bool) -> dict[str, Any]:
        """JSON-ready dict; without ``detail`` the per-tag map and digest lists are left out."""
        data = asdict(self)
        data["generator_version"] = GENERATOR_VERSION
        data["detail"] = detail
        for name, elig in self.eligible.items():
            data["eligible"][name]["gc_line"] = elig.gc_line()
        if not detail:
            data["tag_map"] = {}
            for elig_data in data["eligible"].values():
                elig_data["digests"] = []
        return data

    def print_report(self, out: Any = sys.stdout) -> None:
        """Print a short human-readable summary."""
        shape = self.shape
        print(f"shape {shape.name} (seed {self.seed}) -> {self.root}", file=out)
        print(
            f"  {self.files:,} files, {self.dirs:,} dirs, {self.manifests:,} manifests, "
            f"{self.blobs:,} blobs, {self.links:,} links, {self.tags:,} tags",
            file=out,
        )
        print(
            f"  {self.blob_bytes:,} blob bytes, {self.file_bytes:,} file bytes, "
            f"pushes {self.first_push} .. {self.newest_push}",
            file=out,
        )
        for name, elig in self.eligible.items():
            print(f"  {name}: {elig.gc_line()} ({elig.bytes:,} bytes)", file=out)
        done = "checked and updated in place" if self.in_place else "written"
        print(f"  {done} in {self.seconds:.1f} s", file=out)


def summary_path(dest: Path) -> Path:
    """Where the summary of the tree at ``dest`` lives (beside it, outside the storage tree)."""
    dest = Path(os.path.abspath(dest))
    return dest.parent / f"{dest.name}.summary.json"


def repo_name(index: int) -> str:
    """Repository name of the ``index``-th repository.

    Mixes flat and nested names; every fourth one lives inside the previous repository's directory
    (``a/b/app6`` and ``a/b/app6/worker`` are both repositories).
    """
    kind = index % 4
    if kind == 0:
        return f"app{index}"
    if kind == 1:
        return f"org{index % 7}/app{index}"
    if kind == 2:
        return f"org{index % 7}/team{index % 5}/app{index}"
    return f"{repo_name(index - 1)}/worker"


def tag_name(push: int) -> str:
    """Version tag of the ``push``-th image of a repository (1-based), e.g. ``1.4.2``."""
    return f"{1 + push // 100}.{(push // 10) % 10}.{push % 10}"


def push_time(shape: Shape, repo: int, push: int) -> int:
    """Seconds since the Unix epoch of the ``push``-th push (1-based) into repository ``repo``.

    Pushes interleave across repositories: all first pushes, then all second pushes, and so on.
    """
    return EPOCH + ((push - 1) * shape.repositories + repo) * PUSH_STEP


def iso(seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def _spread(count: int, total: int) -> list[int]:
    """``count`` indices spread evenly over ``range(total)``."""
    if total <= 0:
        return []
    return [i * total // count for i in range(count)]


def _dump(obj: Any) -> bytes:
    return json.dumps(obj, indent=3).encode()


def _descriptor(media_type: str, body: bytes, hexd: str) -> dict[str, Any]:
    return {"mediaType": media_type, "size": len(body), "digest": "sha256:" + hexd}


class _Writer:
    """Writes files and directories with plain syscalls and counts what it created.

    Directory mtimes are set afterwards to the time of their newest entry (or their creation
    time when empty), as the registry's pushes would have left them. A directory only this
    writer fills is "own" and set by flush(); a directory several workers write into is
    "shared" and set by the parent process from every worker's record (set_shared_mtimes).
    """

    def __init__(self, v2: str, known_blobs: set[str], in_place: bool = False) -> None:
        self.blob_root = v2 + "/blobs/sha256"
        self.in_place = in_place  # check an existing tree and set its mtimes, create nothing
        self.known = known_blobs
        self.files = 0
        self.dirs = 0  # own directories (shared ones are counted from shared_made)
        self.file_bytes = 0
        self.links = 0
        self.blob_count = 0
        self.blob_bytes = 0
        self.blob_sizes: dict[str, int] = {}  # blobs created since the last reset()
        self.dir_times: dict[str, int] = {}  # own directories -> mtime to set
        self.shared_made: dict[str, int] = {}  # shared directories -> earliest push needing it
        self.shared_touch: dict[str, int] = {}  # shared directories -> newest own entry in it

    def reset(self, known_blobs: set[str]) -> None:
        """Start a new repository: forget the blobs of the previous one (none are shared)."""
        self.known = known_blobs
        self.blob_sizes = {}

    def _entry(self, path: str, mtime: int) -> None:
        """Record that ``path`` was created at ``mtime`` in its parent directory."""
        parent = path.rpartition("/")[0]
        if parent in self.dir_times:
            if self.dir_times[parent] < mtime:
                self.dir_times[parent] = mtime
        elif self.shared_touch.get(parent, 0) < mtime:
            self.shared_touch[parent] = mtime

    def mkdir(self, path: str, mtime: int) -> None:
        if not self.in_place:
            os.mkdir(path, DIR_MODE)
        elif not os.path.isdir(path):
            raise FileNotFoundError(f"{path}: directory missing")
        self.dirs += 1
        self.dir_times[path] = mtime
        self._entry(path, mtime)

    def mkdir_shared(self, path: str, mtime: int) -> None:
        """mkdir of a directory other workers may create or write into too."""
        if not self.in_place:
            with contextlib.suppress(FileExistsError):
                os.mkdir(path, DIR_MODE)
        elif not os.path.isdir(path):
            raise FileNotFoundError(f"{path}: directory missing")
        if self.shared_made.get(path, mtime + 1) > mtime:
            self.shared_made[path] = mtime

    def makedirs(self, base: str, rel: str, mtime: int) -> str:
        path = base
        for part in rel.split("/"):
            path = f"{path}/{part}"
            self.mkdir_shared(path, mtime)
        return path

    def flush(self) -> None:
        """Set the mtimes of the own directories; they are complete."""
        for path, mtime in self.dir_times.items():
            ns = mtime * 1_000_000_000
            os.utime(path, ns=(ns, ns))
        self.dir_times = {}

    def write(self, path: str, data: bytes, mtime: int) -> None:
        if self.in_place:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        else:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
        try:
            if self.in_place:
                if os.read(fd, len(data) + 1) != data:
                    raise ValueError(f"{path}: content differs from what the generator writes")
            else:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
            ns = mtime * 1_000_000_000
            os.utime(fd, ns=(ns, ns))
        finally:
            os.close(fd)
        self._entry(path, mtime)
        self.files += 1
        self.file_bytes += len(data)

    def blob(self, body: bytes, mtime: int) -> str:
        """Store ``body`` once under its sha256; return the hex digest."""
        hexd = hashlib.sha256(body).hexdigest()
        if hexd in self.known:
            return hexd
        self.known.add(hexd)
        fan = f"{self.blob_root}/{hexd[:2]}"
        self.mkdir_shared(fan, mtime)
        self.mkdir(f"{fan}/{hexd}", mtime)
        self.write(f"{fan}/{hexd}/data", body, mtime)
        self.blob_count += 1
        self.blob_bytes += len(body)
        self.blob_sizes[hexd] = len(body)
        return hexd

    def link(self, parent: str, hexd: str, mtime: int) -> None:
        """``parent/<hex>/link`` holding ``sha256:<hex>`` (71 bytes, no newline)."""
        path = f"{parent}/{hexd}"
        self.mkdir(path, mtime)
        self.write(path + "/link", b"sha256:" + hexd.encode(), mtime)
        self.links += 1


@dataclass
class _Partial:
    """What one worker reports about the repositories it wrote."""

    files: int = 0
    dirs: int = 0
    file_bytes: int = 0
    links: int = 0
    blobs: int = 0
    blob_bytes: int = 0
    manifests: int = 0
    tags: int = 0
    newest: int = 0
    tag_map: dict[str, dict[str, str]] = field(default_factory=dict)
    unreferenced: list[str] = field(default_factory=list)
    # per GC semantics: marked non-pool digests, eligible (hex, size) and manifests queued
    marked: dict[str, int] = field(default_factory=dict)
    eligible: dict[str, list[tuple[str, int]]] = field(default_factory=dict)
    eligible_manifests: dict[str, int] = field(default_factory=dict)
    pool_marked: dict[str, set[str]] = field(default_factory=dict)
    shared_made: dict[str, int] = field(default_factory=dict)
    shared_touch: dict[str, int] = field(default_factory=dict)


@dataclass
class _Task:
    shape: Shape
    seed: int
    v2: str
    repos: list[int]
    pool: list[tuple[str, int]]  # (hex, size) of the shared layers
    layer_only_repos: list[int]
    in_place: bool = False


class _RepoBuilder:
    """Writes one repository: its images, optional index, tags and links."""

    def __init__(self, task: _Task, writer: _Writer, index: int) -> None:
        self.task = task
        self.shape = task.shape
        self.w = writer
        self.index = index
        self.name = repo_name(index)
        self.rng = random.Random(f"storscan-gentree:{task.seed}:{index}")
        self.pool_sizes = dict(task.pool)
        self.layer_links: set[str] = set()
        self.refs: dict[str, list[str]] = {}  # manifest hex -> referenced digests
        self.tagged: set[str] = set()  # manifest hexes some tag's current/link holds

    def run(self, part: _Partial) -> None:
        w = self.w
        shape = self.shape
        first = push_time(shape, self.index, 1)
        repo_dir = w.makedirs(self.task.v2 + "/repositories", self.name, first)
        w.mkdir(repo_dir + "/_layers", first)
        self.layers_dir = repo_dir + "/_layers/sha256"
        w.mkdir(self.layers_dir, first)
        w.mkdir(repo_dir + "/_manifests", first)
        w.mkdir(repo_dir + "/_manifests/revisions", first)
        self.revs_dir = repo_dir + "/_manifests/revisions/sha256"
        w.mkdir(self.revs_dir, first)
        tags_dir = repo_dir + "/_manifests/tags"
        w.mkdir(tags_dir, first)
        w.mkdir(repo_dir + "/_uploads", first)
        w.reset(set(self.pool_sizes))

        history: dict[str, list[tuple[str, int]]] = {}
        tagged_pushes: list[tuple[str, int]] = []
        last_time = EPOCH
        for push in range(1, shape.images + 1):
            when = push_time(shape, self.index, push)
            last_time = when
            hexd = self.image(push, when)
            if shape.untagged_every > 0 and push % shape.untagged_every == 0:
                continue
            history[tag_name(push)] = [(hexd, when)]
            tagged_pushes.append((hexd, when))
        if shape.latest_history > 0 and tagged_pushes:
            history["latest"] = tagged_pushes[-shape.latest_history :]
        if shape.index_every > 0 and self.index % shape.index_every == 0:
            when = push_time(shape, self.index, shape.images + 1)
            last_time = when
            history["multiarch"] = [(self.multiarch(when), when)]
        if self.index in self.task.layer_only_repos:
            # An interrupted push: the layer was uploaded and linked, its manifest never came.
            when = last_time + PUSH_STEP // 2
            for k in range(self.task.layer_only_repos.count(self.index)):
                body = self.layer_body(f"unfinished push {self.name} {k}")
                hexd = w.blob(body, when)
                self.link_layer(hexd, when)
                part.unreferenced.append("sha256:" + hexd)

        tag_map: dict[str, str] = {}
        for tag, entries in history.items():
            tag_dir = f"{tags_dir}/{tag}"
            tagged_at = entries[0][1]
            w.mkdir(tag_dir, tagged_at)
            w.mkdir(tag_dir + "/index", tagged_at)
            w.mkdir(tag_dir + "/index/sha256", tagged_at)
            for hexd, when in entries:
                w.link(tag_dir + "/index/sha256", hexd, when)
            w.mkdir(tag_dir + "/current", tagged_at)
            hexd, when = entries[-1]
            w.write(tag_dir + "/current/link", b"sha256:" + hexd.encode(), when)
            w.links += 1
            tag_map[tag] = "sha256:" + hexd
            self.tagged.add(hexd)
        part.tag_map[self.name] = tag_map
        part.tags += len(tag_map)
        part.manifests += len(self.refs)
        part.newest = max(part.newest, last_time)
        self.account(part, list(w.blob_sizes))
        w.flush()

    def account(self, part: _Partial, own_blobs: list[str]) -> None:
        """Mark as the three GC flavours would and record what is left unmarked."""
        pool = set(self.pool_sizes)
        every: set[str] = set()
        for hexd, refs in self.refs.items():
            every.add(hexd)
            every.update(refs)
        flat: set[str] = set()  # 2.8: tagged manifests and their direct references
        for hexd in self.tagged:
            flat.add(hexd)
            flat.update(self.refs[hexd])
        deep: set[str] = set()  # 3.x: recursive from tagged manifests
        stack = list(self.tagged)
        while stack:
            hexd = stack.pop()
            if hexd in deep:
                continue
            deep.add(hexd)
            for ref in self.refs.get(hexd, []):
                if ref in self.refs:
                    stack.append(ref)
                else:
                    deep.add(ref)
        untagged = [h for h in self.refs if h not in self.tagged]
        queued = {
            GC_PLAIN: 0,
            GC_UNTAGGED_28: len(untagged),
            GC_UNTAGGED_3: len([h for h in untagged if h not in deep]),
        }
        sizes = self.w.blob_sizes
        for name, marks in ((GC_PLAIN, every), (GC_UNTAGGED_28, flat), (GC_UNTAGGED_3, deep)):
            part.marked[name] = part.marked.get(name, 0) + len(marks - pool)
            part.pool_marked.setdefault(name, set()).update(marks & pool)
            gone = part.eligible.setdefault(name, [])
            gone.extend((h, sizes[h]) for h in own_blobs if h not in marks)
            part.eligible_manifests[name] = part.eligible_manifests.get(name, 0) + queued[name]

    def layer_body(self, label: str) -> bytes:
        size = self.rng.randint(16, 200)
        head = f"{label}\n".encode()
        return head + self.rng.randbytes(max(0, size - len(head)))

    def link_layer(self, hexd: str, when: int) -> None:
        if hexd not in self.layer_links:
            self.layer_links.add(hexd)
            self.w.link(self.layers_dir, hexd, when)

    def image_parts(
        self, label: str, when: int, arch: str, variant: str, oci: bool
    ) -> tuple[str, bytes, list[str]]:
        """Upload layers and config of one image; return (config hex, config body, layer hexes)."""
        shape = self.shape
        layer_hexes: list[str] = []
        for k in range(shape.own_layers):
            hexd = self.w.blob(self.layer_body(f"{label} layer {k}"), when)
            layer_hexes.append(hexd)
        if shape.shared_layers > 0 and self.task.pool:
            picks = self.rng.sample(range(len(self.task.pool)), shape.shared_layers)
            # base layers first, the image's own layers on top
            layer_hexes[:0] = [self.task.pool[i][0] for i in sorted(picks)]
        for hexd in layer_hexes:
            self.link_layer(hexd, when)
        config: dict[str, Any] = {
            "architecture": arch,
            "os": "linux",
            "created": iso(when),
            "config": {
                "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                "Cmd": ["/usr/local/bin/app"],
                "Labels": {"org.opencontainers.image.title": label},
            },
            "rootfs": {"type": "layers", "diff_ids": ["sha256:" + h for h in layer_hexes]},
            "history": [
                {"created": iso(when), "created_by": f"gentree {label} step {k}"}
                for k in range(len(layer_hexes))
            ],
        }
        if variant:
            config["variant"] = variant
        if oci:
            config["config"]["Labels"]["org.opencontainers.image.version"] = label
        body = _dump(config)
        config_hex = self.w.blob(body, when)
        self.link_layer(config_hex, when)
        return config_hex, body, layer_hexes

    def put_manifest(self, body: bytes, refs: list[str], when: int) -> str:
        hexd = self.w.blob(body, when)
        self.refs[hexd] = refs
        self.w.link(self.revs_dir, hexd, when)
        return hexd

    def layer_descriptors(self, hexes: list[str], media_type: str) -> list[dict[str, Any]]:
        sizes = self.w.blob_sizes
        pool = self.pool_sizes
        return [
            {"mediaType": media_type, "size": sizes.get(h) or pool[h], "digest": "sha256:" + h}
            for h in hexes
        ]

    def image(self, push: int, when: int) -> str:
        """Push one Docker schema2 image; return its manifest hex."""
        label = f"{self.name}:{push}"
        config_hex, config_body, layers = self.image_parts(label, when, "amd64", "", oci=False)
        manifest = {
            "schemaVersion": 2,
            "mediaType": MT_DOCKER_MANIFEST,
            "config": _descriptor(MT_DOCKER_CONFIG, config_body, config_hex),
            "layers": self.layer_descriptors(layers, MT_DOCKER_LAYER),
        }
        return self.put_manifest(_dump(manifest), [config_hex, *layers], when)

    def multiarch(self, when: int) -> str:
        """Push an OCI index whose children are pushed by digest; return the index hex."""
        children: list[dict[str, Any]] = []
        child_hexes: list[str] = []
        for arch, variant in PLATFORMS[: self.shape.index_platforms]:
            label = f"{self.name}:multiarch:{arch}{variant}"
            config_hex, config_body, layers = self.image_parts(label, when, arch, variant, oci=True)
            manifest = {
                "schemaVersion": 2,
                "mediaType": MT_OCI_MANIFEST,
                "config": _descriptor(MT_OCI_CONFIG, config_body, config_hex),
                "layers": self.layer_descriptors(layers, MT_OCI_LAYER),
            }
            body = _dump(manifest)
            hexd = self.put_manifest(body, [config_hex, *layers], when)
            platform = {"architecture": arch, "os": "linux"}
            if variant:
                platform["variant"] = variant
            children.append({**_descriptor(MT_OCI_MANIFEST, body, hexd), "platform": platform})
            child_hexes.append(hexd)
        index = {"schemaVersion": 2, "mediaType": MT_OCI_INDEX, "manifests": children}
        return self.put_manifest(_dump(index), child_hexes, when)


def _build(task: _Task) -> _Partial:
    """Worker: write the repositories of ``task``."""
    writer = _Writer(task.v2, set(), task.in_place)
    part = _Partial()
    for index in task.repos:
        _RepoBuilder(task, writer, index).run(part)
    part.files = writer.files
    part.dirs = writer.dirs
    part.file_bytes = writer.file_bytes
    part.links = writer.links
    part.blobs = writer.blob_count
    part.blob_bytes = writer.blob_bytes
    part.shared_made = writer.shared_made
    part.shared_touch = writer.shared_touch
    return part


def set_shared_mtimes(made: list[dict[str, int]], touched: list[dict[str, int]]) -> None:
    """Set the mtimes of the directories several writers shared.

    A shared directory was created by the earliest push that needed it; its mtime is that of its
    newest entry: own entries recorded by the writers, shared subdirectories by their creation.
    """
    created: dict[str, int] = {}
    for record in made:
        for path, mtime in record.items():
            created[path] = min(mtime, created.get(path, mtime))
    mtimes = dict(created)
    for record in touched:
        for path, mtime in record.items():
            if path in mtimes and mtimes[path] < mtime:
                mtimes[path] = mtime
    for path, mtime in created.items():
        parent = path.rpartition("/")[0]
        if parent in mtimes and mtimes[parent] < mtime:
            mtimes[parent] = mtime
    for path, mtime in mtimes.items():
        ns = mtime * 1_000_000_000
        os.utime(path, ns=(ns, ns))


def _chunks(total: int, count: int) -> Iterator[list[int]]:
    count = max(1, min(count, total))
    for i in range(count):
        chunk = list(range(i * total // count, (i + 1) * total // count))
        if chunk:
            yield chunk


def generate(
    shape: Shape, dest: Path, seed: int = 0, jobs: int | None = None, in_place: bool = False
) -> Summary:
    """Write the tree for ``shape`` under ``dest`` and its summary file beside ``dest``.

    ``dest`` must not exist or be an empty directory. ``jobs`` worker processes write
    repositories in parallel (default: up to 2); the output does not depend on it.

    ``in_place``: ``dest`` already holds the tree (e.g. from an older generator version that
    wrote the same files). Check that every file has the content this generator writes, set
    every mtime, and rewrite the summary; create and delete nothing. Raises ValueError or
    FileNotFoundError when the tree differs. (Files the generator would not write are not
    looked for.)
    """
    started = time.perf_counter()
    dest = Path(os.path.abspath(dest))
    if in_place:
        if not (dest / "docker" / "registry" / "v2").is_dir():
            raise FileNotFoundError(f"{dest}: no docker/registry/v2 to update in place")
    elif dest.exists() and any(dest.iterdir()):
        raise FileExistsError(f"{dest} exists and is not empty")
    dest.mkdir(parents=True, exist_ok=True)
    root = str(dest)
    writer = _Writer(root + "/docker/registry/v2", set(), in_place)
    writer.shared_made[root] = REGISTRY_START
    v2 = writer.makedirs(root, "docker/registry/v2", REGISTRY_START)
    writer.makedirs(v2, "blobs/sha256", REGISTRY_START)
    writer.makedirs(v2, "repositories", REGISTRY_START)

    rng = random.Random(f"storscan-gentree:{seed}:pool")
    pool: list[tuple[str, int]] = []
    for i in range(shape.pool_size):
        size = rng.randint(16, 200)
        head = f"base layer {i}\n".encode()
        body = head + rng.randbytes(max(0, size - len(head)))
        pool.append((writer.blob(body, REGISTRY_START), len(body)))

    task_repos = list(_chunks(shape.repositories, 8 * (jobs or min(2, os.cpu_count() or 1))))
    layer_only = _spread(shape.layer_only_blobs, shape.repositories)
    tasks = [_Task(shape, seed, v2, repos, pool, layer_only, in_place) for repos in task_repos]
    jobs = jobs or min(2, os.cpu_count() or 1)
    if jobs > 1 and len(tasks) > 1:
        with multiprocessing.get_context("fork").Pool(jobs) as workers:
            parts = workers.map(_build, tasks, chunksize=1)
    else:
        parts = [_build(task) for task in tasks]

    newest = max([p.newest for p in parts], default=EPOCH)
    unreferenced: list[tuple[str, int]] = []
    for k in range(shape.orphan_blobs):
        # e.g. a blob whose upload finished but whose link write was lost
        size = rng.randint(16, 200)
        head = f"orphan blob {k}\n".encode()
        body = head + rng.randbytes(max(0, size - len(head)))
        unreferenced.append((writer.blob(body, newest + PUSH_STEP), len(body)))
    writer.flush()
    set_shared_mtimes(
        [writer.shared_made, *(p.shared_made for p in parts)],
        [writer.shared_touch, *(p.shared_touch for p in parts)],
    )

    summary = Summary(shape=shape, seed=seed, root=root, in_place=in_place)
    summary.repositories = [repo_name(i) for i in range(shape.repositories)]
    summary.files = writer.files + sum(p.files for p in parts)
    shared = set(writer.shared_made).union(*(p.shared_made for p in parts))
    summary.dirs = writer.dirs + sum(p.dirs for p in parts) + len(shared - {root})
    summary.file_bytes = writer.file_bytes + sum(p.file_bytes for p in parts)
    summary.links = sum(p.links for p in parts)
    summary.blobs = writer.blob_count + sum(p.blobs for p in parts)
    summary.blob_bytes = writer.blob_bytes + sum(p.blob_bytes for p in parts)
    summary.manifests = sum(p.manifests for p in parts)
    summary.tags = sum(p.tags for p in parts)
    summary.first_push = iso(push_time(shape, 0, 1))
    summary.newest_push = iso(newest)
    for part in parts:
        summary.tag_map.update(part.tag_map)
    summary.unreferenced_blobs = sorted(
        [d for p in parts for d in p.unreferenced] + ["sha256:" + h for h, _ in unreferenced]
    )
    for name in (GC_PLAIN, GC_UNTAGGED_28, GC_UNTAGGED_3):
        pool_marked: set[str] = set()
        gone: list[tuple[str, int]] = list(unreferenced)
        elig = Eligibility()
        for part in parts:
            pool_marked |= part.pool_marked.get(name, set())
            gone.extend(part.eligible.get(name, []))
            elig.marked += part.marked.get(name, 0)
            elig.manifests += part.eligible_manifests.get(name, 0)
        gone.extend(item for item in pool if item[0] not in pool_marked)
        elig.marked += len(pool_marked)
        elig.blobs = len(gone)
        elig.bytes = sum(size for _, size in gone)
        elig.digests = sorted("sha256:" + h for h, _ in gone)
        summary.eligible[name] = elig
    summary.seconds = time.perf_counter() - started
    write_summary(summary, dest)
    return summary


def write_summary(summary: Summary, dest: Path) -> Path:
    """Write ``summary`` as JSON beside ``dest``; detail only for trees up to DETAIL_LIMIT blobs."""
    path = summary_path(dest)
    data = summary.to_json(detail=summary.blobs <= DETAIL_LIMIT)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    tmp.replace(path)
    return path


def load_summary(dest: Path) -> dict[str, Any] | None:
    """The summary JSON of the tree at ``dest``, or None when there is none."""
    path = summary_path(dest)
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data


def matches(data: dict[str, Any], shape: Shape, seed: int) -> bool:
    """Whether a loaded summary describes a tree generated from ``shape`` and ``seed``."""
    return (
        data.get("generator_version") == GENERATOR_VERSION
        and data.get("seed") == seed
        and data.get("shape") == asdict(shape)
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("shape", choices=sorted(SHAPES), help="tree shape")
    parser.add_argument("dest", type=Path, help="registry rootdirectory to create (must be new)")
    parser.add_argument("--seed", type=int, default=0, help="content seed (default 0)")
    parser.add_argument("--jobs", type=int, default=None, help="worker processes (default 2)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument(
        "--in-place",
        action="store_true",
        help="DEST already holds this tree (older generator version): check its files, reset "
        "all mtimes and rewrite the summary, creating and deleting nothing",
    )
    args = parser.parse_args(argv)
    try:
        summary = generate(
            SHAPES[args.shape], args.dest, seed=args.seed, jobs=args.jobs, in_place=args.in_place
        )
    except (FileExistsError, FileNotFoundError, ValueError) as exc:
        print(f"gentree: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(summary.to_json(detail=False), indent=1, sort_keys=True))
    else:
        summary.print_report()
        print(f"  summary: {summary_path(args.dest)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
