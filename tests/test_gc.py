"""storscan gc on the demo storage: the built-in mark and sweep, its refusals, --registry-cmd.

Expected blobs and bytes come from ``fixtures/demo.pushed.json``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.clirun import run_cli
from tests.support.tree import blob_data_path, repo_dir, tree_fingerprint, v2_dir

NOW = "2027-01-01T00:00:00Z"
Pushed = dict[str, Any]


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Any:
    def run(*args: str) -> tuple[int, str, str]:
        return run_cli(capsys, monkeypatch, *args)

    return run


def sizes(pushed: Pushed) -> dict[str, int]:
    out = {b["digest"]: b["size"] for b in pushed["blobs"]}
    out.update({m["digest"]: m["size"] for m in pushed["manifests"]})
    return out


def image_blobs(pushed: Pushed, name: str) -> set[str]:
    [rec] = [m for m in pushed["manifests"] if m["name"] == name]
    return {rec["digest"], *rec["references"]}


def named(pushed: Pushed, name: str) -> str:
    [rec] = [b for b in pushed["blobs"] if b["name"] == name]
    return str(rec["digest"])


def unreferenced(pushed: Pushed) -> set[str]:
    """The API-deleted image, the orphan layer and the blob pushed with no manifest."""
    orphans = {named(pushed, "bar-orphan-layer"), named(pushed, "scratch-layer")}
    return image_blobs(pushed, "bar-old") | orphans


def present(root: Path) -> set[str]:
    blobs = v2_dir(root) / "blobs/sha256"
    return {"sha256:" + p.parent.name for p in blobs.glob("*/*/data")}


def test_dry_run_lists_what_a_correct_gc_frees(cli: Any, demo_root: Path, pushed: Pushed) -> None:
    code, out, err = cli("gc", str(demo_root), "--format", "json", "--now", NOW)
    assert code == 0, err
    data = json.loads(out)
    want = unreferenced(pushed)
    assert {b["digest"]: b["size"] for b in data["blobs"]} == {d: sizes(pushed)[d] for d in want}
    assert data["bytes"] == sum(sizes(pushed)[d] for d in want)
    links = {
        f"repositories/{repo}/_layers/sha256/{d.split(':')[1]}"
        for repo, info in pushed["repositories"].items()
        for d in info["layer_links"]
        if d in want
    }
    assert set(data["layer_links"]) == links
    assert "must be stopped or read-only" in err


def test_apply_sweeps_blobs_links_and_empty_prefixes(
    cli: Any, demo_root: Path, pushed: Pushed
) -> None:
    before = present(demo_root)
    code, _, err = cli("gc", str(demo_root), "--apply", "--yes", "--now", NOW)
    assert code == 0, err
    want = unreferenced(pushed)
    assert present(demo_root) == before - want
    freed = sum(sizes(pushed)[d] for d in want)
    assert f"freed {len(want)} blobs" in err and f"({freed} bytes)" in err
    assert "restart the registry" in err
    bar = repo_dir(demo_root, "foo/bar") / "_layers/sha256"
    assert {p.name for p in bar.iterdir()} == {
        d.split(":")[1] for d in pushed["repositories"]["foo/bar"]["layer_links"] if d not in want
    }
    prefixes = list((v2_dir(demo_root) / "blobs/sha256").iterdir())
    assert all(any(p.iterdir()) for p in prefixes)
    # Nothing is left to collect.
    code, out, _ = cli("gc", str(demo_root), "--format", "json", "--now", NOW)
    assert json.loads(out)["blobs"] == []


def test_delete_untagged_keeps_multi_arch_children(
    cli: Any, demo_root: Path, pushed: Pushed
) -> None:
    code, _, err = cli("gc", str(demo_root), "--delete-untagged", "--apply", "--yes", "--now", NOW)
    assert code == 0, err
    base = named(pushed, "base-layer")
    gone = unreferenced(pushed) | (image_blobs(pushed, "api-v1") - {base})
    everything = {b["digest"] for b in pushed["blobs"]} | {m["digest"] for m in pushed["manifests"]}
    assert present(demo_root) == everything - gone
    for child in ("busybox-amd64", "busybox-arm64", "cli-amd64", "cli-arm64", "web-sbom"):
        assert image_blobs(pushed, child) <= present(demo_root)
    assert "untagged revisions moved into quarantine" in err


def test_prune_apply_gc_chains_and_frees_the_prediction(
    cli: Any, demo_root: Path, pushed: Pushed
) -> None:
    code, out, _ = cli("prune", str(demo_root), "--repo", "tools/cli", "--tag", "1.0", "-f", "json")
    predicted = json.loads(out)["bytes_to_free"]
    code, _, err = cli(
        "prune", str(demo_root), "--repo", "tools/cli", "--tag", "1.0", "--apply", "--gc", "--yes",
        "--now", NOW,
    )  # fmt: skip
    assert code == 0, err
    gone = unreferenced(pushed) | (
        image_blobs(pushed, "cli-index")
        | image_blobs(pushed, "cli-amd64")
        | image_blobs(pushed, "cli-arm64")
    ) - {named(pushed, "base-layer")}
    expected = sum(sizes(pushed)[d] for d in gone)
    assert predicted == expected
    assert f"({expected} bytes) (measured by rescanning)" in err


def test_grace_period_refuses_while_pushes_may_run(cli: Any, demo_root: Path) -> None:
    # The demo's uploads started at 2026-12-04T16:45:41Z.
    before = tree_fingerprint(demo_root / "docker")
    code, _, err = cli("gc", str(demo_root), "--apply", "--yes", "--now", "2026-12-04T17:00:00Z")
    assert code == 4 and "grace period" in err and "read-only" in err
    code, _, err = cli(
        "gc", str(demo_root), "--apply", "--yes", "--grace", "5m", "--now", "2026-12-04T17:00:00Z"
    )
    assert code == 0, err
    assert tree_fingerprint(demo_root / "docker") != before


def test_uncertain_mark_refuses_unless_forced(cli: Any, demo_root: Path, pushed: Pushed) -> None:
    [alpine] = [m for m in pushed["manifests"] if m["name"] == "alpine"]
    link = (
        repo_dir(demo_root, "library/alpine")
        / "_manifests/revisions/sha256"
        / alpine["digest"].split(":")[1]
        / "link"
    )
    link.write_bytes(b"")
    before = tree_fingerprint(demo_root / "docker")
    code, _, err = cli("gc", str(demo_root), "--apply", "--yes", "--now", NOW)
    assert code == 4 and "mark uncertain" in err and "--force" in err
    assert tree_fingerprint(demo_root / "docker") == before
    code, _, err = cli("gc", str(demo_root), "--apply", "--yes", "--force", "--now", NOW)
    assert code == 0, err
    assert blob_data_path(demo_root, alpine["digest"]).exists()  # its directory names it


def _fake_gc(tmp_path: Path, lines: list[str], code: int = 0) -> str:
    script = tmp_path / "fake_gc.py"
    calls = tmp_path / "calls.txt"
    script.write_text(
        "import sys\n"
        f"open({str(calls)!r}, 'a').write(' '.join(sys.argv[1:]) + '\\n')\n"
        f"print({chr(10).join(lines)!r})\n"
        f"sys.exit({code})\n"
    )
    return f"{sys.executable} {script} CONFIG"


def test_registry_cmd_that_would_break_an_image_is_refused(
    cli: Any, demo_root: Path, pushed: Pushed, tmp_path: Path
) -> None:
    layer = named(pushed, "cli-arm64-layer")
    cmd = _fake_gc(tmp_path, [f"blob eligible for deletion: {layer}"])
    code, _, err = cli(
        "gc", str(demo_root), "--registry-cmd", cmd, "--apply", "--yes", "--now", NOW
    )
    assert code == 4
    assert "tools/cli:1.0" in err and "nothing was run" in err
    assert (tmp_path / "calls.txt").read_text().splitlines() == ["CONFIG --dry-run"]


def test_registry_cmd_that_agrees_runs_for_real(
    cli: Any, demo_root: Path, pushed: Pushed, tmp_path: Path
) -> None:
    lines = [f"blob eligible for deletion: {d}" for d in sorted(unreferenced(pushed))]
    cmd = _fake_gc(tmp_path, lines)
    code, _, err = cli(
        "gc", str(demo_root), "--registry-cmd", cmd, "--apply", "--yes", "--now", NOW
    )
    assert code == 0, err
    assert (tmp_path / "calls.txt").read_text().splitlines() == ["CONFIG --dry-run", "CONFIG"]


def test_registry_cmd_failing_dry_run_is_refused(cli: Any, demo_root: Path, tmp_path: Path) -> None:
    cmd = _fake_gc(tmp_path, ["failed to garbage collect: boom"], code=1)
    code, _, err = cli("gc", str(demo_root), "--registry-cmd", cmd, "--now", NOW)
    assert code == 4 and "failed with exit 1" in err


def test_gc_refuses_when_a_tag_names_a_manifest_without_revision(
    cli: Any, demo_root: Path, pushed: Pushed
) -> None:
    """foo:latest keeps its tag but loses its revision link: a sweep would take its image."""
    digest = pushed["final_tags"]["foo"]["latest"]
    link = v2_dir(demo_root) / "repositories/foo/_manifests/revisions/sha256"
    (link / digest.split(":")[1] / "link").unlink()
    before = tree_fingerprint(demo_root)
    code, _, err = cli("gc", str(demo_root), "--apply", "--yes", "--now", NOW)
    assert code == 4, err
    assert "foo:latest" in err and "no revision link" in err
    assert tree_fingerprint(demo_root) == before
