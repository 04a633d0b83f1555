"""Prove the real-registry harness and the demo fixture archive against distribution 2.8.

The expectations are derived from ``fixtures/demo.pushed.json`` (the push log written by
``fixtures/regenerate.py``), never from storscan.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest

from tests.support.registry import (
    DOCKER_LAYER,
    MANIFEST_MEDIA_TYPES,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER,
    OCI_MANIFEST,
    Client,
    Registry,
    RegistryError,
    blob_bytes,
    descriptor,
    free_port,
    garbage_collect,
    image_config,
    image_manifest,
    index_manifest,
    registry_available,
    sha256_digest,
    write_config,
)
from tests.support.tree import (
    DEMO_ARCHIVE,
    FIXTURES_DIR,
    blob_data_path,
    repo_dir,
    tree_fingerprint,
    v2_dir,
)

Pushed = dict[str, Any]

needs_registry = pytest.mark.skipif(
    not registry_available(),
    reason="docker-registry (distribution 2.8) is not on PATH; install the Debian package "
    "docker-registry to run the real-registry tests",
)

INDEX_TYPES = {OCI_INDEX, "application/vnd.docker.distribution.manifest.list.v2+json"}


# --- expectations derived from the push log -------------------------------------------------


def all_stored_digests(pushed: Pushed) -> set[str]:
    """Every digest under blobs/: pushed blobs plus manifest bodies (manifests are blobs)."""
    return {b["digest"] for b in pushed["blobs"]} | {m["digest"] for m in pushed["manifests"]}


def gc_visible_repos(pushed: Pushed) -> set[str]:
    """Repositories 2.8's catalog and GC enumerate: those with a ``_layers`` directory."""
    return {repo for repo, info in pushed["repositories"].items() if info["layer_links"]}


def expected_gc(pushed: Pushed, *, delete_untagged: bool) -> tuple[set[str], set[str]]:
    """(eligible blobs, eligible manifests) of 2.8's ``garbage-collect --dry-run [-m]``.

    2.8 marks, for every surviving revision link in every enumerated repository, the manifest
    digest and its direct references (config + layers, or an index's child digests) with no
    recursion and no ``subject`` following. With ``-m``, a revision that no tag's current link
    points at is reported as eligible instead and neither it nor its references are marked.
    The mark set is global; every stored digest left unmarked is an eligible blob.
    """
    visible = gc_visible_repos(pushed)
    marked: set[str] = set()
    eligible_manifests: set[str] = set()
    for m in pushed["manifests"]:
        if m["deleted"] or m["repo"] not in visible:
            continue  # API-deleted: its revision link is gone, so GC never sees it
        tagged = bool(m["tags"])
        if delete_untagged and not tagged:
            eligible_manifests.add(m["digest"])
            continue
        marked.add(m["digest"])
        marked.update(m["references"])
    return all_stored_digests(pushed) - marked, eligible_manifests


def manifest_records(pushed: Pushed) -> dict[tuple[str, str], dict[str, Any]]:
    return {(m["repo"], m["digest"]): m for m in pushed["manifests"]}


def manifest_by_name(pushed: Pushed, name: str) -> dict[str, Any]:
    """The manifest record with a given ``name`` label."""
    [rec] = [m for m in pushed["manifests"] if m["name"] == name]
    found: dict[str, Any] = rec
    return found


def blob_by_name(pushed: Pushed, name: str) -> dict[str, Any]:
    """The blob record with a given ``name`` label."""
    [rec] = [b for b in pushed["blobs"] if b["name"] == name]
    found: dict[str, Any] = rec
    return found


# --- the archive itself (no registry needed) -------------------------------------------------


def test_archive_is_small_relative_and_owned_by_root() -> None:
    assert DEMO_ARCHIVE.stat().st_size < 100_000
    with tarfile.open(DEMO_ARCHIVE, "r:gz") as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names, "empty archive"
    assert all(n == "docker" or n.startswith("docker/") for n in names), names[:5]
    assert not any(n.startswith("/") or ".." in n.split("/") for n in names)
    assert all(m.uid == 0 and m.gid == 0 and m.uname == "" and m.gname == "" for m in members)
    assert all(m.isdir() or m.isfile() for m in members)
    assert len(names) == len(set(names))


def test_archive_matches_push_log(demo_root: Path, pushed: Pushed) -> None:
    totals = pushed["totals"]
    stored = 0
    for rec in [*pushed["blobs"], *pushed["manifests"]]:
        data = blob_data_path(demo_root, rec["digest"]).read_bytes()
        assert len(data) == rec["size"], rec["name"]
        assert sha256_digest(data) == rec["digest"], rec["name"]
    for digest in all_stored_digests(pushed):
        stored += blob_data_path(demo_root, digest).stat().st_size
    assert stored == totals["store_bytes"]
    on_disk = {p.parent.name for p in (v2_dir(demo_root) / "blobs" / "sha256").glob("*/*/data")}
    assert {f"sha256:{h}" for h in on_disk} == all_stored_digests(pushed)

    for repo, info in pushed["repositories"].items():
        layers = repo_dir(demo_root, repo) / "_layers" / "sha256"
        found = {f"sha256:{p.parent.name}" for p in layers.glob("*/link")}
        assert found == set(info["layer_links"]), repo
        for link in layers.glob("*/link"):
            # Link files hold exactly the digest, no newline (71 bytes for sha256).
            assert link.read_bytes() == f"sha256:{link.parent.name}".encode()
        assert (repo_dir(demo_root, repo) / "_manifests").is_dir() == info["has_manifests"]

    for repo, tags in pushed["final_tags"].items():
        tag_root = repo_dir(demo_root, repo) / "_manifests" / "tags"
        assert sorted(p.name for p in tag_root.iterdir()) == sorted(tags)
        for tag, digest in tags.items():
            assert (tag_root / tag / "current" / "link").read_text() == digest
            index = {f"sha256:{p.name}" for p in (tag_root / tag / "index" / "sha256").iterdir()}
            assert index == set(pushed["tag_index"][repo][tag]), (repo, tag)

    for m in pushed["manifests"]:
        rev = repo_dir(demo_root, m["repo"]) / "_manifests" / "revisions" / "sha256"
        rev = rev / m["digest"].split(":", 1)[1]
        assert rev.is_dir()  # the API delete leaves the (empty) revision directory
        assert (rev / "link").exists() == (not m["deleted"]), m["name"]


def test_archive_keeps_what_delete_and_uploads_leave(demo_root: Path, pushed: Pushed) -> None:
    [deleted] = pushed["deleted_manifests"]
    digest = deleted["digest"]
    hexpart = digest.split(":", 1)[1]
    manifests = repo_dir(demo_root, deleted["repo"]) / "_manifests"
    rev = manifests / "revisions" / "sha256" / hexpart
    assert rev.is_dir() and not any(rev.iterdir())
    for tag in deleted["tags_removed"]:
        assert not (manifests / "tags" / tag).exists()
    # History entries of the deleted digest under other tags stay behind.
    stale = [t for t, hist in pushed["tag_index"][deleted["repo"]].items() if digest in hist]
    assert stale, "the demo should keep a stale tag-index entry"
    for tag in stale:
        assert (manifests / "tags" / tag / "index" / "sha256" / hexpart / "link").is_file()
    record = manifest_records(pushed)[(deleted["repo"], digest)]
    for d in [digest, *record["references"]]:
        assert blob_data_path(demo_root, d).is_file()  # blobs are not touched by DELETE

    for upload in pushed["unfinished_uploads"]:
        udir = repo_dir(demo_root, upload["repo"]) / "_uploads" / upload["uuid"]
        assert (udir / "data").stat().st_size == upload["bytes"]
        assert (udir / "startedat").read_text().endswith("Z")
        states = sorted(int(p.name) for p in (udir / "hashstates" / "sha256").iterdir())
        assert states == [0, upload["bytes"]]


def test_push_log_describes_the_intended_demo(pushed: Pushed) -> None:
    tags = pushed["final_tags"]
    assert tags["library/alpine"]["3.19"] == tags["library/alpine"]["latest"]
    api_v1 = manifest_by_name(pushed, "api-v1")
    assert api_v1["tags"] == [] and api_v1["digest"] in pushed["tag_index"]["team/app/api"]["v1"]
    sbom = manifest_by_name(pushed, "web-sbom")
    assert sbom["subject"] == tags["team/app/web"]["v1"] and sbom["tags"] == []
    assert sbom["artifact_type"] == "application/spdx+json"
    for index_name in ("cli-index", "busybox-list"):
        index = manifest_by_name(pushed, index_name)
        assert len(index["children"]) == 2
        records = manifest_records(pushed)
        assert all(records[(index["repo"], c)]["tags"] == [] for c in index["children"])
    base = blob_by_name(pushed, "base-layer")
    mounted_into = {m["to"] for m in pushed["cross_mounts"] if m["digest"] == base["digest"]}
    assert len(mounted_into) >= 3
    assert {"foo", "foo/bar"} <= set(pushed["repositories"])
    media = {m["media_type"] for m in pushed["manifests"]}
    assert media == set(MANIFEST_MEDIA_TYPES)


# --- the harness against a fresh registry -----------------------------------------------------


@pytest.mark.registry
@needs_registry
def test_harness_round_trip(tmp_path: Path) -> None:
    root = tmp_path / "store"
    with Registry(root) as reg:
        assert reg.url.startswith("http://127.0.0.1:")
        c = reg.client()
        layer = blob_bytes("harness/layer", 1234)
        assert blob_bytes("harness/layer", 1234) == layer and len(layer) == 1234
        digest = c.push_blob("a/one", layer)
        assert digest == sha256_digest(layer)
        assert c.blob_status("a/two", digest) == 404
        c.mount_blob("a/two", digest, "a/one")
        assert c.get_blob("a/two", digest) == layer

        config = image_config(architecture="amd64", diff_ids=[digest], size=321)
        assert len(config) == 321
        config_digest = c.push_blob("a/two", config)
        body = image_manifest(
            descriptor(OCI_CONFIG, config), [descriptor(OCI_LAYER, layer)], oci=True
        )
        m_digest = c.put_manifest("a/two", "t1", body, OCI_MANIFEST)
        assert c.get_manifest("a/two", "t1") == (body, m_digest)
        idx = index_manifest(
            [descriptor(OCI_MANIFEST, body, platform={"architecture": "amd64", "os": "linux"})],
            oci=True,
        )
        idx_digest = c.put_manifest("a/two", "multi", idx, OCI_INDEX)
        assert c.get_manifest("a/two", idx_digest)[0] == idx
        with pytest.raises(RegistryError) as err:
            c.put_manifest(
                "a/two",
                "bad",
                image_manifest(
                    descriptor(OCI_CONFIG, config_digest, 321),
                    [descriptor(DOCKER_LAYER, "sha256:" + "0" * 64, 10)],
                    oci=False,
                ),
                "application/vnd.docker.distribution.manifest.v2+json",
            )
        assert err.value.status == 400  # the layer blob is unknown

        assert sorted(c.tags("a/two")) == ["multi", "t1"]
        assert c.catalog(page_size=1) == ["a/one", "a/two"]
        c.delete_manifest("a/two", m_digest)
        assert c.manifest_status("a/two", m_digest) == 404
        assert c.tags("a/two") == ["multi"]
        assert c.blob_status("a/two", digest) == 200

        uuid = c.start_upload("a/one", b"x" * 77)
        data = v2_dir(root) / "repositories" / "a" / "one" / "_uploads" / uuid / "data"
        assert data.stat().st_size == 77
        pid = reg.pid
        assert pid is not None
    assert reg.pid is None
    with pytest.raises(OSError):
        Client(reg.url).ping()


@pytest.mark.registry
@needs_registry
def test_readonly_registry_refuses_writes(tmp_path: Path) -> None:
    with Registry(tmp_path / "ro", readonly=True) as reg:
        with pytest.raises(RegistryError) as err:
            reg.client().push_blob("x/y", b"data")
        assert err.value.status == 405


def test_client_refuses_non_loopback_urls() -> None:
    with pytest.raises(ValueError):
        Client("http://localhost:5000")
    with pytest.raises(ValueError):
        Client("https://127.0.0.1:5000")


# --- the demo archive served by the real registry ---------------------------------------------


def _check_manifest_tree(c: Client, pushed: Pushed, repo: str, digest: str) -> set[str]:
    """Pull a manifest by digest and everything below it; returns the blob digests pulled."""
    records = manifest_records(pushed)
    blob_sizes = {b["digest"]: b["size"] for b in pushed["blobs"]}
    rec = records[(repo, digest)]
    body, got = c.get_manifest(repo, digest)
    assert got == digest == sha256_digest(body)
    assert len(body) == rec["size"]
    assert json.loads(body)["mediaType"] == rec["media_type"]
    pulled: set[str] = set()
    if rec["media_type"] in INDEX_TYPES:
        for child in rec["children"]:
            pulled |= _check_manifest_tree(c, pushed, repo, child)
        return pulled
    for ref in rec["references"]:
        data = c.get_blob(repo, ref)
        assert sha256_digest(data) == ref
        assert len(data) == blob_sizes[ref]
        pulled.add(ref)
    return pulled


@pytest.mark.registry
@needs_registry
def test_demo_serves_every_pushed_tag(demo_root: Path, pushed: Pushed) -> None:
    before = tree_fingerprint(demo_root)
    with Registry(demo_root) as reg:
        c = reg.client()
        assert c.catalog(page_size=3) == sorted(gc_visible_repos(pushed))
        pulled: set[str] = set()
        for repo, tags in pushed["final_tags"].items():
            assert sorted(c.tags(repo)) == sorted(tags)
            for tag, digest in tags.items():
                body, got = c.get_manifest(repo, tag)
                assert got == digest == sha256_digest(body), (repo, tag)
                pulled |= _check_manifest_tree(c, pushed, repo, digest)
        assert blob_by_name(pushed, "base-layer")["digest"] in pulled

        for m in pushed["manifests"]:
            want = 404 if m["deleted"] else 200
            assert c.manifest_status(m["repo"], m["digest"]) == want, m["name"]
            if not m["deleted"] and not m["tags"]:
                _check_manifest_tree(c, pushed, m["repo"], m["digest"])  # untagged, pullable
        for d in pushed["deleted_manifests"]:
            for tag in d["tags_removed"]:
                assert c.manifest_status(d["repo"], tag) == 404
        for repo, info in pushed["repositories"].items():
            for digest in info["layer_links"]:
                assert c.blob_status(repo, digest) == 200, (repo, digest)
    assert tree_fingerprint(demo_root) == before


# --- garbage-collect on the extracted demo ----------------------------------------------------


def _gc_config(tmp_path: Path, root: Path) -> Path:
    config = tmp_path / "gc.yml"
    write_config(root, config, free_port())
    return config


@pytest.mark.registry
@needs_registry
@pytest.mark.parametrize("delete_untagged", [False, True], ids=["plain", "delete-untagged"])
def test_gc_dry_run_matches_push_log(
    tmp_path: Path, demo_root: Path, pushed: Pushed, delete_untagged: bool
) -> None:
    want_blobs, want_manifests = expected_gc(pushed, delete_untagged=delete_untagged)
    before = tree_fingerprint(demo_root)
    result = garbage_collect(
        _gc_config(tmp_path, demo_root), dry_run=True, delete_untagged=delete_untagged
    )
    assert result.returncode == 0, result.stderr
    assert result.eligible_blobs == want_blobs
    assert result.eligible_manifests == want_manifests
    assert result.marked == all_stored_digests(pushed) - want_blobs
    assert result.summary == (len(result.marked), len(want_blobs), len(want_manifests))
    assert tree_fingerprint(demo_root) == before

    if not delete_untagged:
        # The plain run frees exactly the API-deleted manifest with its unique blobs, plus the
        # blobs no manifest ever referenced.
        deleted = manifest_by_name(pushed, "bar-old")
        names = {"bar-orphan-layer", "scratch-layer"}
        expected = {deleted["digest"], *deleted["references"]}
        expected |= {blob_by_name(pushed, n)["digest"] for n in names}
        assert want_blobs == expected
        assert want_manifests == set()
    else:
        untagged = {"api-v1", "web-sbom", "cli-amd64", "cli-arm64"}
        untagged |= {"busybox-amd64", "busybox-arm64"}
        assert want_manifests == {manifest_by_name(pushed, n)["digest"] for n in untagged}


@pytest.mark.registry
@needs_registry
def test_gc_real_run_removes_exactly_the_dry_run_set(
    tmp_path: Path, demo_root: Path, pushed: Pushed
) -> None:
    want_blobs, _ = expected_gc(pushed, delete_untagged=False)
    config = _gc_config(tmp_path, demo_root)
    result = garbage_collect(config, dry_run=False)
    assert result.returncode == 0, result.stderr
    assert result.eligible_blobs == want_blobs
    for digest in all_stored_digests(pushed):
        assert blob_data_path(demo_root, digest).exists() == (digest not in want_blobs)
        # 2.8 never removes the two-character fan-out directory.
        assert blob_data_path(demo_root, digest).parent.parent.is_dir()
    # 2.8 leaves _layers links to swept blobs behind.
    orphan = blob_by_name(pushed, "bar-orphan-layer")["digest"]
    link = repo_dir(demo_root, "foo/bar") / "_layers" / "sha256" / orphan.split(":")[1] / "link"
    assert link.is_file()

    again = garbage_collect(config, dry_run=True)
    assert again.returncode == 0 and again.eligible_blobs == set()
    with Registry(demo_root) as reg:
        c = reg.client()
        for repo, tags in pushed["final_tags"].items():
            for digest in tags.values():
                _check_manifest_tree(c, pushed, repo, digest)


def _without_upload_ids(log: Pushed) -> Pushed:
    stripped = dict(log)
    stripped["unfinished_uploads"] = [
        {k: v for k, v in u.items() if k != "uuid"} for u in log["unfinished_uploads"]
    ]
    return stripped


@pytest.mark.registry
@needs_registry
def test_regenerate_reproduces_the_committed_log(tmp_path: Path, pushed: Pushed) -> None:
    """Regenerating yields the same digests and log (upload UUIDs aside): no fixture drift."""
    script = FIXTURES_DIR / "regenerate.py"
    proc = subprocess.run(
        [sys.executable, str(script), "--out-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    fresh: Pushed = json.loads((tmp_path / "demo.pushed.json").read_text(encoding="utf-8"))
    assert _without_upload_ids(fresh) == _without_upload_ids(pushed)
    assert (tmp_path / "demo.tar.gz").stat().st_size < 100_000
