"""storscan against the registry's own ``garbage-collect`` (distribution 2.8), digest for digest.

On storage where the two agree (every repository has ``_layers``, every revision blob is present
and parses, index children are revisions of their index's repository), storscan's unreferenced
set equals what ``docker-registry garbage-collect --dry-run`` lists. Where 2.8 decides wrongly,
storscan's GC-hazard findings predict exactly what 2.8 would delete.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import (
    EXIT_OK,
    NOW,
    Log,
    Pushed,
    cli,
    needs_registry,
    revision_link,
    write_link,
)
from tests.oracle import Oracle
from tests.support.registry import (
    GCResult,
    Registry,
    free_port,
    garbage_collect,
    sha256_digest,
    write_config,
)
from tests.support.tree import blob_data_path, repo_dir

pytestmark = [pytest.mark.registry, needs_registry]


def gc(tmp_path: Path, root: Path, *, delete_untagged: bool = False) -> GCResult:
    config = tmp_path / "gc.yml"
    write_config(root, config, free_port())
    return garbage_collect(config, dry_run=True, delete_untagged=delete_untagged)


def audit(root: Path) -> list[dict[str, Any]]:
    run = cli("audit", root, "--format", "json", "--fail-on", "never", "--now", NOW)
    assert run.code == EXIT_OK, run.describe()
    findings: list[dict[str, Any]] = json.loads(run.stdout)["findings"]
    return findings


def digests(findings: list[dict[str, Any]], code: str) -> set[str]:
    return {f["digest"] for f in findings if f["code"] == code}


def report_summary(root: Path) -> dict[str, Any]:
    run = cli("report", root, "--format", "json")
    assert run.code == EXIT_OK, run.describe()
    summary: dict[str, Any] = json.loads(run.stdout)["summary"]
    return summary


def assert_parity(tmp_path: Path, root: Path, expected: set[str], oracle: Oracle) -> None:
    """storscan's audit, storscan's report, the registry and the push log agree."""
    result = gc(tmp_path, root)
    assert result.returncode == 0, result.stderr
    unreferenced = digests(audit(root), "blob_unreferenced")
    assert unreferenced == result.eligible_blobs
    assert unreferenced == expected
    summary = report_summary(root)
    assert summary["unreferenced_blobs"] == len(result.eligible_blobs)
    assert summary["unreferenced_bytes"] == oracle.bytes(expected)


def test_unreferenced_set_equals_registry_dry_run(
    tmp_path: Path, demo_tree: Path, pushed: Pushed, log: Log
) -> None:
    names = ("bar-old", "bar-old-config", "bar-old-layer", "bar-orphan-layer", "scratch-layer")
    expected = {log.digest(n) for n in names}
    oracle = Oracle(pushed)
    assert oracle.unreferenced() == expected
    assert_parity(tmp_path, demo_tree, expected, oracle)


@pytest.mark.parametrize(
    ("repo", "name", "freed"),
    [
        # A tagged image: its tag goes with it; the base layer stays in use elsewhere.
        ("foo", "foo", ("foo", "foo-config", "foo-layer")),
        # An index: only its own blob goes; its children are revisions of their own.
        ("tools/cli", "cli-index", ("cli-index",)),
        # An untagged revision.
        ("team/app/api", "api-v1", ("api-v1", "api-v1-config", "api-v1-layer")),
    ],
)
def test_parity_after_a_delete_through_the_api(
    tmp_path: Path,
    demo_tree: Path,
    pushed: Pushed,
    log: Log,
    repo: str,
    name: str,
    freed: tuple[str, ...],
) -> None:
    digest = log.digest(name)
    with Registry(demo_tree, config_path=tmp_path / "serve.yml") as registry:
        client = registry.client()
        client.delete_manifest(repo, digest)
        assert client.manifest_status(repo, digest) == 404

    # The push log, updated the way the API delete works: revision and current tags go.
    next(m for m in pushed["manifests"] if m["digest"] == digest)["deleted"] = True
    tags = pushed["final_tags"].get(repo, {})
    for tag in [t for t, d in tags.items() if d == digest]:
        del tags[tag]
    oracle = Oracle(pushed)
    expected = {log.digest(n) for n in ("bar-old", "bar-old-config", "bar-old-layer")}
    expected |= {log.digest(n) for n in ("bar-orphan-layer", "scratch-layer")}
    expected |= {log.digest(n) for n in freed}
    assert oracle.unreferenced() == expected
    assert_parity(tmp_path, demo_tree, expected, oracle)


def test_repository_without_layers_predicts_what_2_8_wrongly_deletes(
    tmp_path: Path, demo_tree: Path, pushed: Pushed, log: Log
) -> None:
    shutil.rmtree(repo_dir(demo_tree, "foo") / "_layers")
    result = gc(tmp_path, demo_tree)
    assert result.returncode == 0, result.stderr
    findings = audit(demo_tree)
    wrongly = result.eligible_blobs - digests(findings, "blob_unreferenced")
    assert wrongly == {log.digest(n) for n in ("foo", "foo-config", "foo-layer")}
    [skipped] = [f for f in findings if f["code"] == "gc28_repo_skipped"]
    assert skipped["repository"] == "foo"
    assert skipped["bytes"] == Oracle(pushed).bytes(wrongly)


def test_untagged_children_are_what_2_8_delete_untagged_deletes(
    tmp_path: Path, demo_tree: Path, pushed: Pushed, log: Log
) -> None:
    result = gc(tmp_path, demo_tree, delete_untagged=True)
    assert result.returncode == 0, result.stderr
    findings = audit(demo_tree)
    hazards = {f["digest"]: f for f in findings if f["code"] == "gc28_untagged_child"}
    untagged = digests(findings, "manifest_untagged")
    # 2.8 -m deletes the truly untagged revision and every child and referrer storscan keeps.
    assert untagged == {log.digest("api-v1")}
    assert set(hazards) | untagged == result.eligible_manifests
    assert not set(hazards) & untagged
    oracle = Oracle(pushed)
    for digest, finding in hazards.items():
        lost = oracle.blobs_of(digest) & result.eligible_blobs
        assert finding["bytes"] == oracle.bytes(lost), digest


def _empty_revision_link(root: Path, log: Log) -> None:
    revision_link(root, "foo", log.digest("foo")).write_bytes(b"")


def _newline_in_revision_link(root: Path, log: Log) -> None:
    digest = log.digest("foo")
    revision_link(root, "foo", digest).write_bytes(digest.encode() + b"\n")


def _malformed_layer_link(root: Path, log: Log) -> None:
    path = repo_dir(root, "foo") / "_layers" / "sha256" / log.digest("foo-layer")[7:] / "link"
    path.write_bytes(b"sha256:short")


def _unparsable_manifest(root: Path, log: Log) -> None:
    body = b'{"schemaVersion": 2, "mediaType": "application/x-not-a-manifest"}'
    digest = sha256_digest(body)
    data = blob_data_path(root, digest)
    data.parent.mkdir(parents=True)
    data.write_bytes(body)
    write_link(revision_link(root, "foo", digest), digest)


@pytest.mark.parametrize(
    ("damage", "code"),
    [
        (_empty_revision_link, "link_empty"),
        (_newline_in_revision_link, "link_trailing_newline"),
        (_malformed_layer_link, "link_malformed"),
        (_unparsable_manifest, "manifest_unparsable"),
    ],
    ids=["empty-link", "newline-link", "malformed-layer-link", "unparsable-manifest"],
)
def test_registry_gc_aborts_where_audit_reports_an_error(
    tmp_path: Path, demo_tree: Path, log: Log, damage: Any, code: str
) -> None:
    damage(demo_tree, log)
    result = gc(tmp_path, demo_tree)
    if code == "link_malformed":
        # 2.8 reads no _layers link while marking: it does not abort, 3.x would.
        assert result.returncode == 0, result.stderr
    else:
        assert result.returncode != 0, result.stdout
        assert "failed to garbage collect" in result.stderr
    [finding] = [f for f in audit(demo_tree) if f["code"] == code]
    assert finding["severity"] == "error"
