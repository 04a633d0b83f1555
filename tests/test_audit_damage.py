"""``storscan audit`` finds each kind of damage: one row per kind, each made on an extracted copy.

Most rows damage the ``healthy_root`` copy (the demo without the repositories that carry
registry-GC hazards or are empty), which on its own has nothing worse than ``info``: so the
exit code of each row shows exactly the severity of its damage. Digests and sizes come from the
push log by name.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import (
    EXIT_FINDINGS,
    EXIT_OK,
    HAZARD_REPOS,
    NOW,
    Log,
    Pushed,
    cli,
    layer_link,
    revision_link,
    storscan,
    tag_dir,
    upload_dirs,
    write_link,
)
from tests.oracle import UPLOAD_OVERHEAD, Oracle
from tests.support.registry import (
    DOCKER_CONFIG,
    DOCKER_LAYER,
    OCI_CONFIG,
    OCI_LAYER,
    descriptor,
    image_manifest,
    sha256_digest,
)
from tests.support.tree import blob_data_path, load_pushed, repo_dir, v2_dir

SEVERITY_RANK = {"info": 0, "warning": 1, "error": 2}
Damage = Callable[[Path, Log], None]


@dataclass(frozen=True)
class Want:
    """A finding that must be present. ``digest`` is a push-log name or a literal digest."""

    code: str
    severity: str
    repository: str | None = None
    tag: str | None = None
    digest: str | None = None
    bytes: int | None = None
    message_has: str | None = None
    path_has: str | None = None


@dataclass(frozen=True)
class Case:
    id: str
    damage: Damage | None
    want: tuple[Want, ...]
    base: str = "healthy"  # or "demo": the pristine demo, which has gc28 errors of its own
    args: tuple[str, ...] = ()
    now: str = NOW
    absent: tuple[str, ...] = ()  # codes that must not be reported

    @property
    def worst(self) -> str:
        return max((w.severity for w in self.want), key=SEVERITY_RANK.__getitem__, default="info")


# --- blobs crafted for the damage --------------------------------------------------------------

NOT_A_MANIFEST = b'{"hello": "world"}\n'


def store_blob(root: Path, data: bytes) -> str:
    """Write ``data`` under blobs/ at its true sha256, as the registry would."""
    digest = sha256_digest(data)
    path = blob_data_path(root, digest)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return digest


def wrong_size_manifest(log: Log) -> bytes:
    """foo's image with the base layer's descriptor one byte too large."""
    return image_manifest(
        descriptor(OCI_CONFIG, log.digest("foo-config"), log.size("foo-config")),
        [descriptor(OCI_LAYER, log.digest("base-layer"), log.size("base-layer") + 1)],
        oci=True,
    )


def foreign_layer_manifest(log: Log) -> bytes:
    """A Windows-style image: its foreign base layer lives at a URL, never in the registry."""
    foreign = descriptor(
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", "sha256:" + "f" * 64, 5000
    )
    foreign["urls"] = ["https://example.invalid/layer.tar.gz"]
    return image_manifest(
        descriptor(DOCKER_CONFIG, log.digest("foo-config"), log.size("foo-config")),
        [foreign, descriptor(DOCKER_LAYER, log.digest("foo-layer"), log.size("foo-layer"))],
        oci=False,
    )


def schema1_manifest(log: Log) -> bytes:
    layer = log.digest("foo-layer")
    body = {
        "schemaVersion": 1,
        "name": "foo",
        "tag": "legacy",
        "architecture": "amd64",
        "fsLayers": [{"blobSum": layer}, {"blobSum": layer}],  # duplicates are legal
        "history": [{"v1Compatibility": "{}"}, {"v1Compatibility": "{}"}],
    }
    return json.dumps(body, indent=3).encode()


SCHEMA1_BODY = schema1_manifest(Log(load_pushed()))


# --- the damage ------------------------------------------------------------------------------


def rm_blob(name: str) -> Damage:
    return lambda root, log: shutil.rmtree(blob_data_path(root, log.digest(name)).parent)


def set_revision_link(repo: str, name: str, content: Callable[[Log], bytes]) -> Damage:
    def damage(root: Path, log: Log) -> None:
        revision_link(root, repo, log.digest(name)).write_bytes(content(log))

    return damage


def link_crafted(make: Callable[[Log], bytes], repo: str = "foo") -> Damage:
    """Store a crafted blob at its true digest and give ``repo`` a revision link to it."""

    def damage(root: Path, log: Log) -> None:
        digest = store_blob(root, make(log))
        write_link(revision_link(root, repo, digest), digest)

    return damage


def empty_tag_link(root: Path, log: Log) -> None:
    (tag_dir(root, "library/alpine", "latest") / "current" / "link").write_bytes(b"")


def malformed_layer_link(root: Path, log: Log) -> None:
    layer_link(root, "foo", log.digest("base-layer")).write_bytes(b"sha256:zzzz")


def malformed_index_link(root: Path, log: Log) -> None:
    hexpart = log.digest("api-v1").split(":")[1]
    index = tag_dir(root, "team/app/api", "v1") / "index" / "sha256" / hexpart / "link"
    index.write_bytes(b"not a digest")


def unlink_foo_revision(root: Path, log: Log) -> None:
    revision_link(root, "foo", log.digest("foo")).unlink()


def junk_manifest(root: Path, log: Log) -> None:
    blob_data_path(root, log.digest("foo")).write_bytes(b"junk, not what was pushed")


def flip_a_byte(root: Path, log: Log) -> None:
    path = blob_data_path(root, log.digest("foo-layer"))
    data = bytearray(path.read_bytes())
    data[0] ^= 0xFF
    path.write_bytes(bytes(data))


def empty_repository(root: Path, log: Log) -> None:
    (repo_dir(root, "lonely") / "_uploads").mkdir(parents=True)


def drop_current(root: Path, log: Log) -> None:
    shutil.rmtree(tag_dir(root, "library/alpine", "latest") / "current")


def drop_layers(root: Path, log: Log) -> None:
    shutil.rmtree(repo_dir(root, "foo") / "_layers")


def symlinked_repository(root: Path, log: Log) -> None:
    outside = root.parent / "outside-repo"
    shutil.copytree(repo_dir(root, "foo"), outside, symlinks=True)
    (repo_dir(root, "evil")).symlink_to(outside, target_is_directory=True)


def symlinked_link_file(root: Path, log: Log) -> None:
    outside = root.parent / "outside-link"
    outside.write_bytes(log.digest("foo").encode())
    link = revision_link(root, "foo", log.digest("foo"))
    link.unlink()
    link.symlink_to(outside)


def drop_startedat(root: Path, log: Log) -> None:
    (upload_dirs(root)[0] / "startedat").unlink()


def scheduler_state(root: Path, log: Log) -> None:
    (root / "scheduler-state.json").write_text("{}")


def drop_repositories(root: Path, log: Log) -> None:
    shutil.rmtree(v2_dir(root) / "repositories")


def drop_blobs(root: Path, log: Log) -> None:
    shutil.rmtree(v2_dir(root) / "blobs")


def invalid_repository_name(root: Path, log: Log) -> None:
    (repo_dir(root, "foo/Bad") / "_layers").mkdir(parents=True)


CASES = [
    Case(
        "empty-revision-link",
        set_revision_link("team/app/api", "api-v2", lambda log: b""),
        (Want("link_empty", "error", "team/app/api", digest="api-v2"),),
    ),
    Case(
        "empty-tag-link",
        empty_tag_link,
        (Want("link_empty", "error", "library/alpine", tag="latest"),),
    ),
    Case(
        "malformed-layer-link",
        malformed_layer_link,
        (Want("link_malformed", "error", "foo", digest="base-layer"),),
    ),
    Case(
        "malformed-tag-index-link",
        malformed_index_link,
        (Want("link_malformed", "error", "team/app/api", tag="v1", digest="api-v1"),),
    ),
    Case(
        "revision-link-trailing-newline",
        set_revision_link("foo", "foo", lambda log: log.digest("foo").encode() + b"\n"),
        (Want("link_trailing_newline", "error", "foo", digest="foo"),),
    ),
    Case(
        "revision-link-holds-another-digest",
        set_revision_link("team/app/api", "api-v1", lambda log: log.digest("api-v2").encode()),
        (Want("link_mismatch", "error", "team/app/api", digest="api-v1"),),
    ),
    Case(
        "tag-manifest-missing",
        rm_blob("foo"),
        (
            Want("tag_manifest_missing", "error", "foo", tag="latest", digest="foo"),
            Want("revision_manifest_missing", "error", "foo", digest="foo"),
        ),
    ),
    Case(
        "revision-manifest-missing",
        rm_blob("api-v1"),
        (Want("revision_manifest_missing", "error", "team/app/api", digest="api-v1"),),
        absent=("tag_manifest_missing",),
    ),
    Case(
        "tag-without-revision",
        unlink_foo_revision,
        (Want("tag_revision_missing", "error", "foo", tag="latest", digest="foo"),),
    ),
    Case(
        "layer-blob-missing",
        rm_blob("api-v2-layer"),
        (
            Want(
                "blob_missing",
                "error",
                "team/app/api",
                tag="v1",
                digest="api-v2-layer",
                message_has="team/app/api:v1",
            ),
            Want("layer_link_dangling", "warning", "team/app/api", digest="api-v2-layer"),
        ),
    ),
    Case(
        "index-child-layer-missing",
        rm_blob("cli-arm64-layer"),
        (
            Want(
                "blob_missing",
                "error",
                "tools/cli",
                tag="1.0",
                digest="cli-arm64-layer",
                message_has="tools/cli:1.0",
            ),
        ),
        base="demo",
    ),
    Case(
        "manifest-hash-mismatch",
        junk_manifest,
        (Want("manifest_digest_mismatch", "error", digest="foo"),),
    ),
    Case(
        "manifest-unparsable",
        link_crafted(lambda log: NOT_A_MANIFEST),
        (Want("manifest_unparsable", "error", digest=sha256_digest(NOT_A_MANIFEST)),),
        absent=("manifest_digest_mismatch",),
    ),
    Case(
        "descriptor-size-mismatch",
        link_crafted(wrong_size_manifest),
        (Want("descriptor_size_mismatch", "error", "foo", digest="base-layer", bytes=4096),),
    ),
    Case(
        "foreign-layer-absent-is-normal",
        link_crafted(foreign_layer_manifest),
        (),
        absent=("blob_missing", "manifest_unparsable"),
    ),
    Case(
        "schema1-aborts-3x-gc",
        link_crafted(lambda log: SCHEMA1_BODY),
        (Want("gc3_schema1_abort", "error", digest=sha256_digest(SCHEMA1_BODY)),),
        absent=("manifest_unparsable", "blob_missing"),
    ),
    Case(
        "blob-hash-mismatch-verify",
        flip_a_byte,
        (Want("blob_digest_mismatch", "error", digest="foo-layer", bytes=1200),),
        args=("--verify",),
    ),
    Case(
        "blob-hash-mismatch-unseen-without-verify",
        flip_a_byte,
        (),
        absent=("blob_digest_mismatch",),
    ),
    Case(
        "upload-stale-by-upload-age",
        None,
        (Want("upload_stale", "warning", "team/app/api", bytes=600 + UPLOAD_OVERHEAD),),
        args=("--upload-age", "1h"),
    ),
    Case(
        "upload-stale-after-default-168h",
        None,
        (Want("upload_stale", "warning", "team/app/api", bytes=600 + UPLOAD_OVERHEAD),),
        now="2024-01-08T00:00:01Z",
    ),
    Case(
        "upload-within-default-168h",
        None,
        (),
        now="2024-01-07T23:59:59Z",
        absent=("upload_stale",),
    ),
    Case(
        "upload-without-startedat",
        drop_startedat,
        # The registry never purges it; its bytes: data and the two hash states.
        (Want("upload_no_startedat", "warning", "team/app/api", bytes=600 + 2 * 108),),
    ),
    Case(
        "dangling-layer-link",
        rm_blob("bar-orphan-layer"),
        (Want("layer_link_dangling", "warning", "foo/bar", digest="bar-orphan-layer"),),
    ),
    Case(
        "empty-repository",
        empty_repository,
        (Want("repository_empty", "warning", "lonely"),),
    ),
    Case(
        "tag-directory-without-current",
        drop_current,
        (Want("tag_without_current", "warning", "library/alpine", tag="latest"),),
    ),
    Case(
        "repository-without-layers",
        drop_layers,
        (
            # 2.8's GC does not see foo: it would sweep foo's manifest, config and layer
            # (the base layer stays marked through library/alpine and team/app/api).
            Want("gc28_repo_skipped", "error", "foo", bytes=732 + 460 + 1200),
            Want("gc3_no_layers_abort", "error", "foo"),
        ),
    ),
    Case(
        "gc28-delete-untagged-children",
        None,
        (
            # 2.8 -m unlinks each child revision; the tagged index marks the child's own
            # digest, not its config and layer; the base stays marked through tagged images.
            Want("gc28_untagged_child", "error", "tools/cli", digest="cli-amd64", bytes=440 + 1500),
            Want("gc28_untagged_child", "error", "tools/cli", digest="cli-arm64", bytes=450 + 2500),
            Want(
                "gc28_untagged_child",
                "error",
                "library/busybox",
                digest="busybox-amd64",
                bytes=490 + 1100,
            ),
            Want(
                "gc28_untagged_child",
                "error",
                "library/busybox",
                digest="busybox-arm64",
                bytes=500 + 1300,
            ),
            # The referrer is marked by nothing: its manifest, {} config and SBOM blob go.
            Want(
                "gc28_untagged_child",
                "error",
                "team/app/web",
                digest="web-sbom",
                bytes=801 + 2 + 700,
            ),
        ),
        base="demo",
    ),
    Case(
        "symlinked-repository-not-followed",
        symlinked_repository,
        (Want("symlink_skipped", "warning", path_has="repositories/evil"),),
    ),
    Case(
        "symlinked-link-file-not-followed",
        symlinked_link_file,
        (Want("link_not_regular", "error", "foo", digest="foo"),),
    ),
    Case(
        "pull-through-scheduler-state",
        scheduler_state,
        (Want("scheduler_state", "info"),),
    ),
    Case(
        "no-repositories-directory",
        drop_repositories,
        (Want("gc_no_repositories_abort", "error"),),
    ),
    Case(
        "no-blobs-directory",
        drop_blobs,
        (Want("gc_no_blobs_abort", "error"),),
    ),
    Case(
        "invalid-repository-name",
        invalid_repository_name,
        (Want("gc_repo_name_abort", "error", "foo/Bad"),),
    ),
]


# --- running a case --------------------------------------------------------------------------


def matches(finding: dict[str, Any], want: Want, log: Log) -> bool:
    digest = want.digest
    if digest is not None and not digest.startswith("sha256:"):
        digest = log.digest(digest)
    checks = [
        finding["code"] == want.code,
        finding["severity"] == want.severity,
        want.repository is None or finding["repository"] == want.repository,
        want.tag is None or finding["tag"] == want.tag,
        digest is None or finding["digest"] == digest,
        want.bytes is None or finding["bytes"] == want.bytes,
        want.message_has is None or want.message_has in finding["message"],
        want.path_has is None or want.path_has in (finding["path"] or ""),
    ]
    return all(checks)


def audit_args(root: Path, case: Case, fail_on: str) -> list[object]:
    # One walker (-j 1) spares a process pool per run; test_walk_modes_agree covers the
    # parallel walk.
    args = ["--format", "json", "--fail-on", fail_on, "--now", case.now, "-j", "1", *case.args]
    return ["audit", root, *args]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_audit_finds_damage(case: Case, request: pytest.FixtureRequest, log: Log) -> None:
    root: Path = request.getfixturevalue("healthy_root" if case.base == "healthy" else "demo_tree")
    if case.damage is not None:
        case.damage(root, log)

    # The run whose threshold is the damage's own severity exits 1 (0 for info-only trees).
    # In-process (CliRunner) for speed; tests/test_cli.py checks the entry point's exit codes.
    threshold = "error" if case.worst == "error" else "warning"
    run = cli(*audit_args(root, case, threshold))
    expected_exit = EXIT_FINDINGS if case.worst in ("error", "warning") else EXIT_OK
    assert run.code == expected_exit, run.describe()
    findings = run.json()["findings"]

    for want in case.want:
        assert any(matches(f, want, log) for f in findings), (want, findings)
    for code in {w.code for w in case.want}:
        # One finding per damaged object: no duplicates, nothing extra of the same kind.
        wanted = sum(1 for w in case.want if w.code == code)
        assert sum(1 for f in findings if f["code"] == code) == wanted, code
    codes = {f["code"] for f in findings}
    assert codes.isdisjoint(case.absent), codes & set(case.absent)
    # The thresholds above and below a severity: tests/test_cli.py, on trees of each kind.


# --- the healthy base and cases needing more than a table row --------------------------------


def test_healthy_base_has_only_info(healthy_root: Path, pushed: Pushed, log: Log) -> None:
    run = storscan("audit", healthy_root, "--format", "json", "--fail-on", "warning", "--now", NOW)
    assert run.code == EXIT_OK, run.describe()
    doc = run.json()
    assert doc["schema_version"] == 1
    findings = doc["findings"]
    assert {f["severity"] for f in findings} == {"info"}
    oracle = Oracle(pushed, removed=HAZARD_REPOS)
    unreferenced = {f["digest"]: f["bytes"] for f in findings if f["code"] == "blob_unreferenced"}
    assert unreferenced == {d: oracle.sizes[d] for d in oracle.unreferenced()}
    [untagged] = [f for f in findings if f["code"] == "manifest_untagged"]
    assert (untagged["repository"], untagged["digest"]) == ("team/app/api", log.digest("api-v1"))
    # Removing api-v1 frees its manifest, config and layer (the base stays tagged).
    assert untagged["bytes"] == log.sizes("api-v1", "api-v1-config", "api-v1-layer")
    assert doc["counts"]["error"] == doc["counts"]["warning"] == 0
    assert doc["counts"]["info"] == len(findings)


def test_symlinked_repository_stays_out_of_the_report(healthy_root: Path, log: Log) -> None:
    """The symlinked copy of foo is neither walked nor reported, nor changed."""
    symlinked_repository(healthy_root, log)
    run = cli("report", healthy_root, "--format", "json")
    assert run.code == EXIT_OK, run.describe()
    names = {r["name"] for r in json.loads(run.stdout)["repositories"]}
    assert names == {"library/alpine", "team/app/api", "foo", "foo/bar"}


COMPATIBLE = (
    "empty-revision-link",
    "empty-tag-link",
    "malformed-layer-link",
    "malformed-tag-index-link",
    "revision-link-holds-another-digest",
    "layer-blob-missing",
    "manifest-unparsable",
    "descriptor-size-mismatch",
    "schema1-aborts-3x-gc",
    "blob-hash-mismatch-verify",
    "dangling-layer-link",
    "empty-repository",
    "symlinked-repository-not-followed",
    "symlinked-link-file-not-followed",
    "upload-without-startedat",
    "pull-through-scheduler-state",
    "invalid-repository-name",
)


def test_walk_modes_agree(healthy_root: Path, log: Log) -> None:
    """The parallel walk finds every damage, and exactly what one or three walkers find.

    All the damages that do not touch the same files go into one tree.
    """
    cases = [c for c in CASES if c.id in COMPATIBLE]
    assert len(cases) == len(COMPATIBLE)
    for case in cases:
        assert case.damage is not None
        case.damage(healthy_root, log)
    runs = [
        cli("audit", healthy_root, "--format", "json", "--verify", "--now", NOW, *jobs)
        for jobs in ([], ["-j", "1"], ["-j", "3"])
    ]
    default, single, three = (json.loads(run.stdout)["findings"] for run in runs)
    for case in cases:
        for want in case.want:
            assert any(matches(f, want, log) for f in default), (case.id, want)
    assert single == default
    assert three == default


def test_every_finding_carries_the_documented_fields(demo_tree: Path) -> None:
    run = cli("audit", demo_tree, "--format", "json", "--fail-on", "never", "--now", NOW)
    assert run.code == EXIT_OK, run.describe()
    doc = json.loads(run.stdout)
    fields = {"code", "severity", "repository", "tag", "digest", "path", "bytes", "message"}
    assert doc["findings"], "the demo has findings"
    for finding in doc["findings"]:
        assert fields <= set(finding), finding
        assert finding["severity"] in SEVERITY_RANK
        assert finding["message"] and "\n" not in finding["message"]
    counts = doc["counts"]
    for severity in SEVERITY_RANK:
        assert counts[severity] == sum(1 for f in doc["findings"] if f["severity"] == severity)
