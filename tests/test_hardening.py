"""Odd input found by trying to break storscan: each case ends in a clear exit code, never a
traceback, a hang, or a change outside the tree."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.clirun import run_cli
from tests.support.tree import DEMO_ARCHIVE, tree_fingerprint, v2_dir

NOW = "2030-01-01T00:00:00Z"
Pushed = dict[str, Any]


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Any:
    def run(*args: str) -> tuple[int, str, str]:
        return run_cli(capsys, monkeypatch, *[str(a) for a in args])

    return run


def _digest_of(pushed: Pushed, repo: str, tag: str) -> str:
    return str(pushed["final_tags"][repo][tag])


def _blob(root: Path, digest: str) -> Path:
    hexpart = digest.split(":")[1]
    return v2_dir(root) / "blobs/sha256" / hexpart[:2] / hexpart / "data"


def _store_revision(root: Path, repo: str, body: bytes) -> str:
    """Store ``body`` as a blob at its digest and link it as a revision of ``repo``."""
    digest = "sha256:" + hashlib.sha256(body).hexdigest()
    blob = _blob(root, digest)
    blob.parent.mkdir(parents=True)
    blob.write_bytes(body)
    rev = v2_dir(root) / f"repositories/{repo}/_manifests/revisions/sha256" / digest[7:]
    rev.mkdir(parents=True)
    (rev / "link").write_bytes(digest.encode())
    return digest


def test_a_fifo_as_startedat_does_not_hang_the_walk(cli: Any, demo_root: Path) -> None:
    uploads = v2_dir(demo_root) / "repositories/team/app/api/_uploads"
    [upload] = [p for p in uploads.iterdir() if p.is_dir()]
    (upload / "startedat").unlink()
    os.mkfifo(upload / "startedat")
    code, out, err = cli("audit", demo_root, "-f", "json", "--fail-on", "never", "--now", NOW)
    assert code == 0, err
    codes = {(f["code"], f["path"]) for f in json.loads(out)["findings"]}
    rel = upload.relative_to(v2_dir(demo_root)).as_posix()
    assert ("upload_no_startedat", rel) in codes


def test_deeply_nested_json_is_an_unparsable_manifest(
    cli: Any, demo_root: Path, pushed: Pushed
) -> None:
    """A manifest of 100,000 nested arrays, stored at its own digest and linked as a revision."""
    _store_revision(demo_root, "foo", b"[" * 100_000 + b"]" * 100_000)
    code, out, err = cli("audit", demo_root, "-f", "json", "--now", NOW)
    assert code == 1, err
    assert {"manifest_unparsable"} <= {f["code"] for f in json.loads(out)["findings"]}


def test_a_negative_descriptor_size_is_a_mismatch(
    cli: Any, demo_root: Path, pushed: Pushed
) -> None:
    """foo gets a new revision whose layer descriptor says -4096 bytes for the 4096-byte base."""
    old = json.loads(_blob(demo_root, _digest_of(pushed, "foo", "latest")).read_bytes())
    base = next(layer for layer in old["layers"] if layer["size"] == 4096)
    base["size"] = -4096
    _store_revision(demo_root, "foo", json.dumps(old).encode())
    code, out, err = cli("audit", demo_root, "-f", "json", "--now", NOW)
    assert code == 1, err
    hits = [f for f in json.loads(out)["findings"] if f["code"] == "descriptor_size_mismatch"]
    assert [(f["digest"], f["bytes"]) for f in hits] == [(base["digest"], 4096)]


@pytest.mark.parametrize("command", [["prune", "--untagged"], ["gc"], ["trash"], ["break-lock"]])
def test_commands_that_change_the_tree_refuse_an_archive(cli: Any, command: list[str]) -> None:
    code, out, err = cli(command[0], DEMO_ARCHIVE, *command[1:])
    assert code == 2, err
    assert out == "" and "archive" in err and "unpack it first" in err


def test_a_truncated_archive_is_unreadable(cli: Any, tmp_path: Path) -> None:
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(DEMO_ARCHIVE.read_bytes()[:20000])
    code, _, err = cli("report", cut)
    assert code == 2, err
    assert "cannot unpack the archive" in err


@pytest.mark.parametrize("where", [".storscan", ".storscan/quarantine"])
def test_a_symlinked_state_dir_is_refused(
    cli: Any, demo_root: Path, tmp_path: Path, where: str
) -> None:
    """A symbolic link there would send the lock and the quarantine out of the tree."""
    outside = tmp_path / "outside"
    outside.mkdir()
    link = demo_root / where
    link.parent.mkdir(exist_ok=True)
    link.symlink_to(outside)
    before = tree_fingerprint(demo_root / "docker")
    code, _, err = cli("prune", demo_root, "--untagged", "--apply", "--yes")
    assert code == 4, err
    assert "not a plain directory" in err
    assert list(outside.iterdir()) == []
    assert tree_fingerprint(demo_root / "docker") == before


def test_restore_refuses_a_journal_pointing_outside_its_quarantine(
    cli: Any, demo_root: Path
) -> None:
    """An edited journal names a live blob as the thing to put back: refused, nothing moved."""
    code, _, err = cli(
        "prune", demo_root, "--repo", "team/app/api", "--untagged", "--apply", "--yes"
    )
    assert code == 0, err
    [qdir] = (demo_root / ".storscan/quarantine").iterdir()
    journal = qdir / "journal.jsonl"
    records = [json.loads(line) for line in journal.read_text().splitlines()]
    blob = next((v2_dir(demo_root) / "blobs/sha256").glob("*/*"))
    records[0]["dst"] = blob.relative_to(demo_root).as_posix()
    journal.write_text("".join(json.dumps(r) + "\n" for r in records))
    before = tree_fingerprint(demo_root / "docker")
    code, _, err = cli("restore", demo_root, qdir.name)
    assert code == 4, err
    assert "does not lie under" in err
    assert tree_fingerprint(demo_root / "docker") == before


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("- a\n- b\n", "expected a mapping"),
        ("storage: 5\n", "storage is not a mapping"),
        ("storage:\n  filesystem:\n    rootdirectory: 12\n", "is not a path"),
    ],
)
def test_a_malformed_config_is_refused_not_defaulted(
    cli: Any, tmp_path: Path, text: str, needle: str
) -> None:
    config = tmp_path / "config.yml"
    config.write_text(text)
    code, out, err = cli("report", "--config", config)
    assert code == 2, err
    assert out == "" and needle in err and len(err.strip().splitlines()) == 1


def test_a_config_that_is_not_text(cli: Any, tmp_path: Path) -> None:
    config = tmp_path / "config.yml"
    config.write_bytes(b"\xff\xfe\x00garbage")
    code, _, err = cli("report", "--config", config)
    assert code == 2, err
    assert "not UTF-8" in err


@pytest.mark.parametrize("option", ["--older-than", "--uploads-older-than", "--grace"])
def test_an_enormous_duration_is_a_usage_error(cli: Any, demo_root: Path, option: str) -> None:
    code, _, err = cli("prune", demo_root, "--repo", "foo", option, "99999999999999d")
    assert code == 2, err
    assert "too long" in err


def test_a_tag_without_revision_keeps_nothing_in_either_scope(
    cli: Any, demo_root: Path, pushed: Pushed
) -> None:
    """alpine's revision link is gone while both tags remain: the tagged scope stays within
    all (both 0 bytes for alpine), since no GC marks a manifest without a revision."""
    digest = _digest_of(pushed, "library/alpine", "latest")
    revs = v2_dir(demo_root) / "repositories/library/alpine/_manifests/revisions/sha256"
    shutil.rmtree(revs / digest[7:])
    for scope in ("all", "tagged"):
        code, out, err = cli("report", demo_root, "-f", "json", "--scope", scope)
        assert code == 0, err
        [row] = [r for r in json.loads(out)["repositories"] if r["name"] == "library/alpine"]
        assert (row["tags"], row["total_bytes"]) == (2, 0), scope


def test_names_with_control_characters_reach_no_terminal_raw(cli: Any, demo_root: Path) -> None:
    """A repository directory named with an escape sequence and a byte that is not UTF-8."""
    src = v2_dir(demo_root) / "repositories/foo/bar"
    evil = os.fsencode(v2_dir(demo_root) / "repositories") + b"/evil\x1b]0;PWN\x07\xff"
    shutil.copytree(src, os.fsdecode(evil))
    for command in (["report"], ["audit", "--fail-on", "never"], ["prune", "--untagged"]):
        code, out, err = cli(command[0], demo_root, *command[1:], "--now", NOW)
        assert code == 0, err
        assert "\x1b" not in out + err and "\x07" not in out + err
    code, out, _ = cli("report", demo_root)
    assert "evil\\x1b]0;PWN\\x07\\xff" in out


@pytest.mark.parametrize("enabled", [True, False])
def test_the_report_states_the_configs_read_only_mode(
    cli: Any, demo_root: Path, tmp_path: Path, enabled: bool
) -> None:
    config = tmp_path / "config.yml"
    config.write_text(
        "version: 0.1\nstorage:\n  filesystem:\n"
        f"    rootdirectory: {demo_root}\n"
        f"  maintenance:\n    readonly:\n      enabled: {str(enabled).lower()}\n"
    )
    code, out, err = cli("report", "--config", config, "-f", "json")
    assert code == 0, err
    assert json.loads(out)["registry_readonly"] is enabled
    code, out, err = cli("report", demo_root, "-f", "json")
    assert "registry_readonly" not in json.loads(out)


def test_newest_created_is_that_of_the_most_recently_pushed_image(
    cli: Any, demo_root: Path, pushed: Pushed
) -> None:
    """foo gets a second image built 2025-06-01. Pushed before foo:latest (its revision link
    is older) it does not count; pushed after, it does. Artifacts never count."""

    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "created": "2025-06-01T00:00:00Z",
            "rootfs": {"type": "layers", "diff_ids": []},
        }
    ).encode()
    config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": len(config),
            },
            "layers": [],
        }
    ).encode()
    digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
    for body, dg in ((config, config_digest), (manifest, digest)):
        _blob(demo_root, dg).parent.mkdir(parents=True)
        _blob(demo_root, dg).write_bytes(body)
    revs = v2_dir(demo_root) / "repositories/foo/_manifests/revisions/sha256"
    (revs / digest[7:]).mkdir()
    link = revs / digest[7:] / "link"
    link.write_bytes(digest.encode())
    current = revs / _digest_of(pushed, "foo", "latest")[7:] / "link"

    def foo_created() -> str:
        code, out, err = cli("report", demo_root, "-f", "json")
        assert code == 0, err
        [row] = [r for r in json.loads(out)["repositories"] if r["name"] == "foo"]
        return str(row["newest_created"])

    old = current.stat().st_mtime
    os.utime(link, (old - 60, old - 60))
    assert foo_created() == "2024-01-01T00:00:00Z"
    os.utime(link, (old + 60, old + 60))
    assert foo_created() == "2025-06-01T00:00:00Z"


def test_a_fifo_and_a_bad_tag_name_are_reported(cli: Any, demo_root: Path) -> None:
    repos = v2_dir(demo_root) / "repositories"
    os.mkfifo(repos / "fifo")
    bad_tag = repos / "foo/_manifests/tags/-bad"
    shutil.copytree(repos / "foo/_manifests/tags/latest", bad_tag)
    code, out, err = cli("audit", demo_root, "-f", "json", "--fail-on", "never", "--now", NOW)
    assert code == 0, err
    found = {(f["code"], f["path"]) for f in json.loads(out)["findings"]}
    assert ("unexpected_entry", "repositories/fifo") in found
    assert ("unexpected_entry", "repositories/foo/_manifests/tags/-bad") in found


def test_a_repo_glob_matching_nothing_is_said(cli: Any, demo_root: Path) -> None:
    code, _, err = cli("prune", demo_root, "--repo", "no/such/**", "--delete-repo")
    assert code == 0, err
    assert "--repo no/such/** matches no repository" in err


def test_directories_nested_past_the_recursion_limit(cli: Any, demo_root: Path) -> None:
    """A damaged tree nesting directories deeper than Python's recursion limit is walked."""
    v2 = v2_dir(demo_root)
    code, out, err = cli("report", demo_root, "-f", "json")
    assert code == 0, err
    before = {r["name"]: r for r in json.loads(out)["repositories"]}
    uploads = v2 / "repositories/team/app/api/_uploads"
    [upload] = [p for p in uploads.iterdir() if p.is_dir()]
    depth = 1200  # past the default limit of 1000; the paths stay under PATH_MAX
    chains = []
    for base in (str(v2 / "repositories/tools/cli"), str(upload)):
        chain = []
        for _ in range(depth):  # makedirs and Path.mkdir(parents=True) recurse themselves
            base += "/n"
            os.mkdir(base)
            chain.append(base)
        chains.append(chain)
    chunk = Path(base, "chunk")
    chunk.write_bytes(b"x" * 7)
    try:
        _check_deep_tree(cli, demo_root, before)
    finally:
        # Remove the chains here: shutil.rmtree, which pytest uses to clear old temporary
        # directories, recurses too and would fail on them in a later session.
        chunk.unlink()
        for chain in chains:
            for directory in reversed(chain):
                os.rmdir(directory)


def _check_deep_tree(cli: Any, demo_root: Path, before: dict[str, Any]) -> None:
    code, out, err = cli("report", demo_root, "-f", "json")
    assert code == 0, err
    after = {r["name"]: r for r in json.loads(out)["repositories"]}
    assert set(after) == set(before)  # plain directories are no repositories
    assert after["team/app/api"]["upload_bytes"] == before["team/app/api"]["upload_bytes"] + 7
    for name in before:
        assert after[name]["total_bytes"] == before[name]["total_bytes"]


def test_an_unreadable_repositories_directory_is_a_finding(
    cli: Any, demo_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Permissions do not bite root, so the refusal is the storage's: one finding, no crash."""
    from storscan.storage import LocalStorage

    listed = LocalStorage.list_dir

    def refuse(self: LocalStorage, rel: str) -> Any:
        if rel == "repositories":
            raise PermissionError(13, "Permission denied")
        return listed(self, rel)

    monkeypatch.setattr(LocalStorage, "list_dir", refuse)
    code, out, err = cli("audit", demo_root, "-f", "json", "-j", "1", "--fail-on", "never")
    assert code == 0, err
    findings = json.loads(out)["findings"]
    assert [f["path"] for f in findings if f["code"] == "unreadable"] == ["repositories"]
