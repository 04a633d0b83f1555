"""The benchmark generator (``benchmarks/gentree.py``) writes storage the real registry accepts.

The tiny shape is generated once per module into a temporary directory. Without the registry:
every blob sits at the sha256 of its bytes, every link is the 71-byte digest string, and the
output does not depend on the number of worker processes. With distribution 2.8 on 127.0.0.1:
the catalog lists every repository, each tag resolves to the digest the generator recorded and
every blob it references downloads with the right digest and size, and ``garbage-collect
--dry-run`` (with and without ``--delete-untagged``) finds exactly the blobs the generator says
are unreferenced.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest

from benchmarks.gentree import (
    GC_PLAIN,
    GC_UNTAGGED_3,
    GC_UNTAGGED_28,
    SHAPES,
    Summary,
    generate,
    summary_path,
)
from tests.support.registry import (
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
    Client,
    Registry,
    garbage_collect,
    registry_available,
    sha256_digest,
)
from tests.support.tree import tree_fingerprint, v2_dir

needs_registry = pytest.mark.skipif(
    not registry_available(),
    reason="docker-registry (distribution 2.8) is not on PATH; install the Debian package "
    "docker-registry to check generated trees against the real registry",
)

ACCEPT = [DOCKER_MANIFEST, OCI_MANIFEST, OCI_INDEX]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Summary]:
    """The tiny shape, generated once: (storage root, the generator's summary)."""
    root = tmp_path_factory.mktemp("gentree") / "tiny"
    return root, generate(SHAPES["tiny"], root, seed=0, jobs=1)


def _files(root: Path) -> dict[str, tuple[bytes, int]]:
    """Every file below ``root``: relative path -> (content, mtime in ns)."""
    out: dict[str, tuple[bytes, int]] = {}
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            path = Path(dirpath, name)
            out[path.relative_to(root).as_posix()] = (path.read_bytes(), path.stat().st_mtime_ns)
    return out


def _dirs(root: Path) -> dict[str, int]:
    """Every directory below ``root``: relative path -> mtime in ns."""
    out: dict[str, int] = {}
    for dirpath, dirs, _names in os.walk(root):
        for name in dirs:
            path = Path(dirpath, name)
            out[path.relative_to(root).as_posix()] = path.stat().st_mtime_ns
    return out


def test_tree_has_only_registry_files(tiny: tuple[Path, Summary]) -> None:
    root, summary = tiny
    assert sorted(p.name for p in root.iterdir()) == ["docker"]
    assert summary_path(root).is_file()
    assert summary_path(root).parent == root.parent
    files = _files(v2_dir(root))
    assert len(files) == summary.files
    assert len(_dirs(root)) == summary.dirs
    blobs = links = 0
    for rel, (content, _mtime) in files.items():
        parts = rel.split("/")
        if parts[0] == "blobs":
            assert parts[1] == "sha256" and parts[4] == "data" and len(parts) == 5
            assert parts[2] == parts[3][:2]
            assert hashlib.sha256(content).hexdigest() == parts[3]
            blobs += 1
        else:
            assert parts[-1] == "link", rel
            assert len(content) == 71 and content.startswith(b"sha256:"), rel
            digest = content.decode()
            # a link's directory is named after the digest it holds (no aliases here)
            if parts[-2] != "current":
                assert parts[-2] == digest.removeprefix("sha256:")
            hexd = digest.removeprefix("sha256:")
            assert f"blobs/sha256/{hexd[:2]}/{hexd}/data" in files, rel
            links += 1
    assert blobs == summary.blobs
    assert links == summary.links
    for repo in summary.repositories:
        uploads = v2_dir(root) / "repositories" / repo / "_uploads"
        assert uploads.is_dir() and not any(uploads.iterdir())


def test_manifests_and_configs_are_consistent(tiny: tuple[Path, Summary]) -> None:
    root, summary = tiny
    blobs = v2_dir(root) / "blobs" / "sha256"

    def body(digest: str) -> bytes:
        hexd = digest.removeprefix("sha256:")
        return (blobs / hexd[:2] / hexd / "data").read_bytes()

    def check_image(manifest: dict[str, Any]) -> None:
        config_body = body(manifest["config"]["digest"])
        assert len(config_body) == manifest["config"]["size"]
        config = json.loads(config_body)
        for key in ("created", "architecture", "os", "rootfs"):
            assert key in config
        assert len(config["rootfs"]["diff_ids"]) == len(manifest["layers"])
        for layer in manifest["layers"]:
            assert len(body(layer["digest"])) == layer["size"]
            assert 16 <= layer["size"] <= 200

    indexes = 0
    for tags in summary.tag_map.values():
        for digest in tags.values():
            manifest = json.loads(body(digest))
            assert manifest["schemaVersion"] == 2
            if manifest["mediaType"] == OCI_INDEX:
                indexes += 1
                for child in manifest["manifests"]:
                    child_body = body(child["digest"])
                    assert len(child_body) == child["size"]
                    check_image(json.loads(child_body))
            else:
                assert manifest["mediaType"] == DOCKER_MANIFEST
                check_image(manifest)
    assert indexes > 0
    assert summary.unreferenced_blobs, "the tiny shape must contain unreferenced blobs"


def test_output_does_not_depend_on_jobs(tiny: tuple[Path, Summary], tmp_path: Path) -> None:
    root, summary = tiny
    again = generate(SHAPES["tiny"], tmp_path / "tiny", seed=0, jobs=2)
    assert _files(tmp_path / "tiny") == _files(root)
    assert _dirs(tmp_path / "tiny") == _dirs(root)
    assert again.tag_map == summary.tag_map
    # the newest push sets the newest mtime; nothing is younger than the orphans written last
    newest = max(mtime for _content, mtime in _files(root).values())
    assert max(_dirs(root).values()) <= newest
    other = generate(SHAPES["tiny"], tmp_path / "seed1", seed=1, jobs=1)
    assert other.tag_map != summary.tag_map


def _check_image_blobs(client: Client, repo: str, manifest: dict[str, Any]) -> int:
    count = 0
    for desc in [manifest["config"], *manifest["layers"]]:
        data = client.get_blob(repo, desc["digest"])
        assert sha256_digest(data) == desc["digest"]
        assert len(data) == desc["size"]
        count += 1
    return count


@pytest.mark.registry
@needs_registry
def test_registry_serves_the_tree(tiny: tuple[Path, Summary]) -> None:
    root, summary = tiny
    with Registry(root) as registry:
        client = registry.client()
        assert sorted(client.catalog()) == sorted(summary.repositories)
        downloaded = 0
        for repo, tags in summary.tag_map.items():
            assert sorted(client.tags(repo)) == sorted(tags)
            # every other version tag, plus the moved tag and the multi-arch index
            sample = set(sorted(tags)[::2]) | ({"latest", "multiarch"} & tags.keys())
            for tag in sorted(sample):
                expected = tags[tag]
                body, digest = client.get_manifest(repo, tag, accept=ACCEPT)
                assert digest == expected, (repo, tag)
                assert sha256_digest(body) == expected
                manifest = json.loads(body)
                if manifest["mediaType"] != OCI_INDEX:
                    downloaded += _check_image_blobs(client, repo, manifest)
                    continue
                for child in manifest["manifests"]:
                    child_body, child_digest = client.get_manifest(
                        repo, child["digest"], accept=ACCEPT
                    )
                    assert child_digest == child["digest"]
                    assert len(child_body) == child["size"]
                    downloaded += _check_image_blobs(client, repo, json.loads(child_body))
        assert downloaded > 0


@pytest.mark.registry
@needs_registry
def test_gc_dry_run_matches_generator(tiny: tuple[Path, Summary]) -> None:
    root, summary = tiny
    registry = Registry(root)
    # start once so the helper writes its configuration file, then collect with it stopped
    with registry:
        pass
    before = tree_fingerprint(root)

    plain = garbage_collect(registry.config_path, dry_run=True)
    assert plain.returncode == 0, plain.stderr
    assert plain.eligible_blobs == set(summary.unreferenced_blobs)
    assert plain.eligible_blobs == set(summary.eligible[GC_PLAIN].digests)
    expected = summary.eligible[GC_PLAIN]
    assert plain.summary == (expected.marked, expected.blobs, expected.manifests)

    untagged = garbage_collect(registry.config_path, dry_run=True, delete_untagged=True)
    assert untagged.returncode == 0, untagged.stderr
    expected = summary.eligible[GC_UNTAGGED_28]
    assert untagged.eligible_blobs == set(expected.digests)
    assert untagged.summary == (expected.marked, expected.blobs, expected.manifests)

    assert tree_fingerprint(root) == before, "a dry run changed the tree"


@pytest.mark.registry
@needs_registry
def test_storscan_agrees_with_the_registry_gc(
    tiny: tuple[Path, Summary], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a generated tree storscan's unreferenced set is the registry's dry run, digest for
    digest; with --delete-untagged it is what 3.x's recursive marking frees (the generator's
    own prediction), which keeps the multi-arch children 2.8 would delete."""
    from tests.clirun import run_cli

    root, summary = tiny
    registry = Registry(root)
    with registry:
        pass
    plain = garbage_collect(registry.config_path, dry_run=True)
    assert plain.returncode == 0, plain.stderr

    code, out, err = run_cli(capsys, monkeypatch, "audit", str(root), "-f", "json")
    assert code in (0, 1), err
    found = {f["digest"] for f in json.loads(out)["findings"] if f["code"] == "blob_unreferenced"}
    assert found == plain.eligible_blobs

    code, out, err = run_cli(capsys, monkeypatch, "report", str(root), "-f", "json")
    assert code == 0, err
    assert json.loads(out)["summary"]["unreferenced_blobs"] == len(plain.eligible_blobs)

    code, out, err = run_cli(
        capsys,
        monkeypatch,
        "gc",
        str(root),
        "--delete-untagged",
        "-f",
        "json",
        "--now",
        "2030-01-01T00:00:00Z",
    )
    assert code == 0, err
    swept = {b["digest"] for b in json.loads(out)["blobs"]}
    assert swept == set(summary.eligible[GC_UNTAGGED_3].digests)
    assert swept != set(summary.eligible[GC_UNTAGGED_28].digests)


def test_scan_does_not_depend_on_walkers(tiny: tuple[Path, Summary]) -> None:
    """One walker or several, the inventory is the same; namespace directories (``org3``,
    ``org3/team1``) are opened up so that each repository is a task of its own."""
    from storscan.root import resolve_root
    from storscan.scan import _repository_tasks, scan
    from storscan.storage import LocalStorage
    from storscan.walker import Walker

    root, summary = tiny
    storage = LocalStorage(str(v2_dir(root)))
    tasks = set(_repository_tasks(Walker(storage, False)))
    # a/b/app6/worker is walked with a/b/app6, the repository whose directory holds it
    assert tasks == {name for name in summary.tag_map if not name.endswith("/worker")}
    assert any("/team" in name for name in tasks)

    located = resolve_root(root)
    one, many = scan(located, jobs=1), scan(located, jobs=6)
    assert set(one.repos) == set(summary.tag_map)
    for name, repo in one.repos.items():
        assert many.repos[name] == repo
        assert {t: tag.digest for t, tag in repo.tags.items()} == summary.tag_map[name]
    assert one.blobs == many.blobs
    assert one.manifests == many.manifests
    assert list(one.manifests) == sorted(one.manifests)
    assert sorted(one.findings) == sorted(many.findings)
    assert one.files_seen == many.files_seen
    assert (one.complete, one.deep) == (True, False)
