"""End to end with the real registry (distribution 2.8): push, prune, collect, serve again.

Each test pushes its own images through the registry's HTTP API on 127.0.0.1, stops it, runs
storscan on the storage, starts the registry again on the result and checks over HTTP that
every kept tag resolves and every blob it references downloads with the right digest, that
removed tags are gone, and that the bytes freed equal the dry run's prediction. Expected
values come from what the test pushed.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.clirun import run_cli
from tests.support.registry import (
    DOCKER_CONFIG,
    DOCKER_LAYER,
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
    Client,
    Registry,
    blob_bytes,
    descriptor,
    free_port,
    image_config,
    image_manifest,
    index_manifest,
    registry_available,
    sha256_digest,
    write_config,
)
from tests.support.tree import repo_dir, tree_fingerprint, v2_dir

pytestmark = [
    pytest.mark.registry,
    pytest.mark.skipif(
        not registry_available(),
        reason="docker-registry (distribution 2.8) is not on PATH; install the Debian package "
        "docker-registry to run the end-to-end tests",
    ),
]

LATER = "2030-01-01T00:00:00Z"  # past every grace period of the blobs pushed here


@dataclass
class Image:
    """What a test pushed: the manifest digest and every blob (digest -> size) it stored."""

    digest: str
    blobs: dict[str, int] = field(default_factory=dict)


def push_image(
    c: Client,
    repo: str,
    seed: str,
    layer_size: int,
    *,
    tag: str | None = None,
    base: tuple[str, bytes] | None = None,
    arch: str = "amd64",
) -> Image:
    """A Docker schema2 image: optional mounted base layer, one own layer, a config."""
    layers: list[bytes] = []
    if base is not None:
        from_repo, data = base
        c.mount_blob(repo, sha256_digest(data), from_repo)
        layers.append(data)
    own = blob_bytes(seed, layer_size)
    c.push_blob(repo, own)
    layers.append(own)
    config = image_config(architecture=arch, diff_ids=[sha256_digest(x) for x in layers])
    c.push_blob(repo, config)
    body = image_manifest(
        descriptor(DOCKER_CONFIG, config), [descriptor(DOCKER_LAYER, x) for x in layers], oci=False
    )
    digest = c.put_manifest(repo, tag or sha256_digest(body), body, DOCKER_MANIFEST)
    blobs = {sha256_digest(x): len(x) for x in [own, config, body]}
    return Image(digest, blobs)


def push_multi_arch(c: Client, repo: str, tag: str, seed: str) -> Image:
    """An OCI index with two platform children pushed by digest only."""
    children = [push_image(c, repo, f"{seed}-{a}", 700, arch=a) for a in ("amd64", "arm64")]
    descs = [
        descriptor(DOCKER_MANIFEST, ch.digest, sizes_of_manifest(c, repo, ch.digest))
        for ch in children
    ]
    for d, arch in zip(descs, ("amd64", "arm64"), strict=True):
        d["platform"] = {"architecture": arch, "os": "linux"}
    body = index_manifest(descs, oci=True)
    digest = c.put_manifest(repo, tag, body, OCI_INDEX)
    blobs = {sha256_digest(body): len(body)}
    for ch in children:
        blobs.update(ch.blobs)
    return Image(digest, blobs)


def sizes_of_manifest(c: Client, repo: str, digest: str) -> int:
    body, _ = c.get_manifest(repo, digest)
    return len(body)


def assert_pullable(c: Client, repo: str, ref: str) -> None:
    """The manifest resolves and every blob it names (children included) has its digest."""
    body, digest = c.get_manifest(repo, ref)
    assert sha256_digest(body) == digest
    doc = json.loads(body)
    for child in doc.get("manifests", []):
        assert_pullable(c, repo, child["digest"])
    for desc in [doc.get("config"), *doc.get("layers", [])]:
        if desc:
            assert sha256_digest(c.get_blob(repo, desc["digest"])) == desc["digest"]


def stored(root: Path) -> dict[str, int]:
    return {
        "sha256:" + p.parent.name: p.stat().st_size
        for p in (v2_dir(root) / "blobs/sha256").glob("*/*/data")
    }


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Any:
    def run(*args: str) -> tuple[int, str, str]:
        return run_cli(capsys, monkeypatch, *args)

    return run


def predicted(cli: Any, root: Path, *flags: str) -> int:
    code, out, err = cli("prune", str(root), *flags, "--format", "json", "--now", LATER)
    assert code == 0, err
    return int(json.loads(out)["bytes_to_free"])


def test_untagged_keeps_a_multi_arch_image_and_builtin_gc_frees_the_prediction(
    cli: Any, tmp_path: Path
) -> None:
    root = tmp_path / "reg"
    with Registry(root) as reg:
        c = reg.client()
        multi = push_multi_arch(c, "app/multi", "1.0", "multi")
        old = push_image(c, "app/moved", "old", 1500, tag="v1")
        new = push_image(c, "app/moved", "new", 2500, tag="v1")  # v1 moves: old is untagged
    before = stored(root)
    fingerprint = tree_fingerprint(root)
    bytes_predicted = predicted(cli, root, "--untagged")
    assert tree_fingerprint(root) == fingerprint  # the dry run wrote nothing
    assert bytes_predicted == sum(old.blobs.values())
    code, _, err = cli("prune", str(root), "--untagged", "--apply", "--gc", "--yes", "--now", LATER)
    assert code == 0, err
    after = stored(root)
    assert set(before) - set(after) == set(old.blobs)
    assert sum(before.values()) - sum(after.values()) == bytes_predicted
    with Registry(root) as reg:
        c = reg.client()
        assert_pullable(c, "app/multi", "1.0")
        assert_pullable(c, "app/moved", "v1")
        assert c.manifest_status("app/moved", old.digest) == 404
        assert set(multi.blobs) | set(new.blobs) <= set(after)


def test_shared_base_layer_of_a_deleted_repository_and_the_registrys_gc(
    cli: Any, tmp_path: Path
) -> None:
    root = tmp_path / "reg"
    base = blob_bytes("base", 4096)
    with Registry(root) as reg:
        c = reg.client()
        c.push_blob("team/old", base)
        old = push_image(c, "team/old", "old", 1000, tag="v1", base=("team/old", base))
        new = push_image(c, "team/new", "new", 2000, tag="v1", base=("team/old", base))
        config = reg.config_path
    before = stored(root)
    bytes_predicted = predicted(cli, root, "--repo", "team/old", "--delete-repo")
    assert bytes_predicted == sum(old.blobs.values())  # the base layer stays: team/new uses it
    code, _, err = cli(
        "prune", str(root), "--repo", "team/old", "--delete-repo", "--apply", "--yes"
    )
    assert code == 0, err
    assert not repo_dir(root, "team/old").exists()
    cmd = f"docker-registry garbage-collect {config}"
    code, _, err = cli("gc", str(root), "--registry-cmd", cmd, "--apply", "--yes", "--now", LATER)
    assert code == 0, err
    assert "the registry's dry run agrees" in err
    after = stored(root)
    assert set(before) - set(after) == set(old.blobs)
    assert sum(before.values()) - sum(after.values()) == bytes_predicted
    with Registry(root) as reg:
        c = reg.client()
        assert_pullable(c, "team/new", "v1")
        assert c.manifest_status("team/old", "v1") == 404
        assert "team/old" not in c.catalog()
        assert sha256_digest(base) in after and set(new.blobs) <= set(after)


def test_two_tags_on_one_manifest_one_removed(cli: Any, tmp_path: Path) -> None:
    root = tmp_path / "reg"
    with Registry(root) as reg:
        c = reg.client()
        img = push_image(c, "r/two", "two", 800, tag="a")
        body, _ = c.get_manifest("r/two", "a")
        c.put_manifest("r/two", "b", body, DOCKER_MANIFEST)
    assert predicted(cli, root, "--repo", "r/two", "--tag", "b") == 0
    code, _, err = cli("prune", str(root), "--repo", "r/two", "--tag", "b", "--apply", "--yes")
    assert code == 0, err
    code, _, err = cli("gc", str(root), "--apply", "--yes", "--now", LATER)
    assert code == 0, err
    assert set(img.blobs) <= set(stored(root))
    with Registry(root) as reg:
        c = reg.client()
        assert_pullable(c, "r/two", "a")
        assert c.manifest_status("r/two", "b") == 404
        assert c.tags("r/two") == ["a"]


def test_restore_after_apply_serves_the_tag_again(cli: Any, tmp_path: Path) -> None:
    root = tmp_path / "reg"
    with Registry(root) as reg:
        c = reg.client()
        img = push_image(c, "r/back", "back", 900, tag="v1")
        push_image(c, "r/back", "keep", 600, tag="v2")
    code, _, err = cli("prune", str(root), "--repo", "r/back", "--tag", "v1", "--apply", "--yes")
    assert code == 0, err
    run_id = re.search(r"into quarantine (\S+);", err).group(1)  # type: ignore[union-attr]
    with Registry(root) as reg:
        assert reg.client().manifest_status("r/back", "v1") == 404
    code, _, err = cli("restore", str(root), run_id)
    assert code == 0, err
    with Registry(root) as reg:
        assert_pullable(reg.client(), "r/back", "v1")
    # After a GC swept its blobs, a restore brings the tag back and says what is gone.
    code, _, err = cli("prune", str(root), "--repo", "r/back", "--tag", "v1", "--apply", "--yes")
    run_id = re.search(r"into quarantine (\S+);", err).group(1)  # type: ignore[union-attr]
    code, _, err = cli("gc", str(root), "--apply", "--yes", "--now", LATER)
    assert code == 0, err
    code, _, err = cli("restore", str(root), run_id)
    assert code == 1, err  # restored, but the image is not whole again: a partial failure
    # The manifest blob itself was swept, so its layers cannot even be named.
    assert f"blob {img.digest} is already gone (swept by gc): r/back:v1" in err


def test_sweep_refused_on_a_corrupt_tree(cli: Any, tmp_path: Path) -> None:
    root = tmp_path / "reg"
    with Registry(root) as reg:
        img = push_image(reg.client(), "r/bad", "bad", 500, tag="v1")
        push_image(reg.client(), "r/bad", "junk", 300, tag="gone")
    code, _, _ = cli("prune", str(root), "--repo", "r/bad", "--tag", "gone", "--apply", "--yes")
    assert code == 0
    layer = next(d for d, s in img.blobs.items() if s == 500)
    (repo_dir(root, "r/bad") / "_layers/sha256" / layer.split(":")[1] / "link").write_bytes(b"")
    fingerprint = tree_fingerprint(root / "docker")
    code, _, err = cli("gc", str(root), "--apply", "--yes", "--now", LATER)
    assert code == 4 and "mark uncertain" in err
    assert tree_fingerprint(root / "docker") == fingerprint


def test_registry_gc_that_would_break_multi_arch_images_is_refused(
    cli: Any, demo_root: Path, tmp_path: Path
) -> None:
    config = tmp_path / "demo.yml"
    write_config(demo_root, config, free_port())
    fingerprint = tree_fingerprint(demo_root / "docker")
    cmd = f"docker-registry garbage-collect {config}"
    code, _, err = cli(
        "gc", str(demo_root), "--delete-untagged", "--registry-cmd", cmd, "--apply", "--yes",
        "--now", LATER,
    )  # fmt: skip
    assert code == 4
    assert "library/busybox:1.36" in err and "tools/cli:1.0" in err
    assert "nothing was run" in err
    assert tree_fingerprint(demo_root / "docker") == fingerprint


def test_saved_plan_refused_after_a_push(cli: Any, tmp_path: Path) -> None:
    root = tmp_path / "reg"
    plan = tmp_path / "plan.json"
    with Registry(root) as reg:
        push_image(reg.client(), "r/plan", "one", 400, tag="v1")
        push_image(reg.client(), "r/plan", "keep", 400, tag="v2")
    code, _, err = cli(
        "prune", str(root), "--repo", "r/plan", "--tag", "v1", "--plan-out", str(plan)
    )
    assert code == 0, err
    with Registry(root) as reg:
        push_image(reg.client(), "r/plan", "two", 400, tag="v1")  # v1 moves meanwhile
    fingerprint = tree_fingerprint(root / "docker")
    code, _, err = cli("prune", str(root), "--apply-plan", str(plan), "--yes")
    assert code == 4 and "tree changed since the plan" in err
    assert tree_fingerprint(root / "docker") == fingerprint
    assert os.path.exists(repo_dir(root, "r/plan") / "_manifests/tags/v1/current/link")


def test_oci_manifest_constant_is_the_registrys(tmp_path: Path) -> None:
    # A guard for the helpers above: the harness's media types are the ones storscan parses.
    from storscan.manifest import OCI_INDEX as S_INDEX
    from storscan.manifest import OCI_MANIFEST as S_MANIFEST

    assert (S_INDEX, S_MANIFEST) == (OCI_INDEX, OCI_MANIFEST)
