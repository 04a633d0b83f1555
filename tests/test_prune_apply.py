"""prune --apply, the quarantine journal, restore, trash, the lock and the confirmation.

Every test works on its own copy of the demo storage (``demo_root``); expectations come from
``fixtures/demo.pushed.json``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from storscan.apply import apply_plan, interruptible, read_journal
from storscan.errors import CancelledError
from storscan.plan import build_plan
from storscan.root import resolve_root
from storscan.scan import scan
from storscan.select import build_selection
from tests.clirun import run_cli
from tests.support.tree import repo_dir, tree_fingerprint, v2_dir

NOW = "2027-01-01T00:00:00Z"
Pushed = dict[str, Any]


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Any:
    def run(*args: str, stdin: str = "", terminal: bool = False) -> tuple[int, str, str]:
        return run_cli(capsys, monkeypatch, *args, stdin=stdin, terminal=terminal)

    return run


def run_id_of(err: str) -> str:
    m = re.search(r"into quarantine (\S+);", err)
    assert m, err
    return m.group(1)


def shape(root: Path) -> dict[str, tuple[str, int, int, bytes]]:
    """Every entry below docker/: kind, mode, file mtime and content (directory mtimes change
    when an entry is renamed in or out, so they are left out)."""
    out = {}
    for dirpath, dirs, files in os.walk(root / "docker"):
        for name in dirs + files:
            p = Path(dirpath) / name
            st = p.lstat()
            rel = p.relative_to(root).as_posix()
            if stat.S_ISDIR(st.st_mode):
                out[rel] = ("d", st.st_mode, 0, b"")
            else:
                out[rel] = ("f", st.st_mode, st.st_mtime_ns, p.read_bytes())
    return out


def manifest_digest(pushed: Pushed, name: str) -> str:
    [rec] = [m for m in pushed["manifests"] if m["name"] == name]
    return str(rec["digest"])


@pytest.mark.parametrize(
    "flags",
    [
        ["--untagged"],
        ["--repo", "tools/cli", "--tag", "1.0", "--gc"],
        ["--repo", "foo", "--delete-repo", "--format", "json"],
        ["--uploads-older-than", "1h"],
    ],
)
def test_dry_run_changes_no_file(cli: Any, demo_root: Path, flags: list[str]) -> None:
    before = tree_fingerprint(demo_root)
    code, _, err = cli("prune", str(demo_root), *flags, "--now", NOW)
    assert code == 0, err
    assert "dry run, nothing changed" in err
    assert tree_fingerprint(demo_root) == before
    assert not (demo_root / ".storscan").exists()


def test_gc_dry_run_changes_no_file(cli: Any, demo_root: Path) -> None:
    before = tree_fingerprint(demo_root)
    code, _, err = cli("gc", str(demo_root), "--delete-untagged", "--now", NOW)
    assert code == 0, err
    assert tree_fingerprint(demo_root) == before


def test_apply_moves_into_quarantine_and_restore_puts_back(
    cli: Any, demo_root: Path, pushed: Pushed
) -> None:
    alpine = repo_dir(demo_root, "library/alpine")
    tag_dir = alpine / "_manifests/tags/latest"
    link = tag_dir / "current/link"
    mode, mtime = tag_dir.stat().st_mode, link.stat().st_mtime_ns
    before = shape(demo_root)
    code, out, err = cli(
        "prune", str(demo_root), "--repo", "library/alpine", "--tag", "*", "--apply", "--yes"
    )
    assert code == 0, err
    run_id = run_id_of(err)
    # Both tags and the revision moved; every reserved directory stays.
    assert not (alpine / "_manifests/tags/latest").exists()
    assert not (alpine / "_manifests/tags/3.19").exists()
    assert (alpine / "_manifests/tags").is_dir()
    assert (alpine / "_manifests/revisions").is_dir()
    assert (alpine / "_layers").is_dir()
    qdir = demo_root / ".storscan/quarantine" / run_id
    moved = qdir / "docker/registry/v2/repositories/library/alpine/_manifests/tags/latest"
    assert moved.stat().st_mode == mode
    assert (moved / "current/link").stat().st_mtime_ns == mtime
    records = [json.loads(x) for x in (qdir / "journal.jsonl").read_text().splitlines()]
    assert [(r["op"], r["kind"], r["tag"]) for r in records] == [
        ("move", "tag", "3.19"),
        ("move", "tag", "latest"),
        ("move", "revision", None),  # no tag reaches it any more
    ]
    assert (
        records[1]["src"] == "docker/registry/v2/repositories/library/alpine/_manifests/tags/latest"
    )
    assert records[1]["dst"] == f".storscan/quarantine/{run_id}/{records[1]['src']}"
    assert {"time", "repository", "digest"} <= set(records[0])
    # The lock is released; planning again finds nothing.
    assert not (demo_root / ".storscan/lock").exists()
    code, out, _ = cli("prune", str(demo_root), "--repo", "library/alpine", "--tag", "*")
    assert "nothing to remove" in out
    # Restore: the tree is as it was (file mtimes and modes included).
    code, _, err = cli("restore", str(demo_root), run_id)
    assert code == 0, err
    assert "restored 3 items" in err
    assert shape(demo_root) == before
    assert not qdir.exists()
    code, _, err = cli("restore", str(demo_root), run_id)
    assert code == 2 and "no quarantine" in err


def test_restore_refuses_to_overwrite_a_tag_pushed_again(cli: Any, demo_root: Path) -> None:
    code, _, err = cli(
        "prune", str(demo_root), "--repo", "foo", "--tag", "latest", "--apply", "--yes"
    )
    assert code == 0, err
    run_id = run_id_of(err)
    again = repo_dir(demo_root, "foo") / "_manifests/tags/latest/current"
    again.mkdir(parents=True)
    (again / "link").write_text("sha256:" + "0" * 64)
    before = tree_fingerprint(demo_root / "docker")
    code, _, err = cli("restore", str(demo_root), run_id)
    assert code == 4
    assert "exists again" in err and "tags/latest" in err
    assert tree_fingerprint(demo_root / "docker") == before


def test_delete_repo_with_a_nested_repository(cli: Any, demo_root: Path, pushed: Pushed) -> None:
    code, _, err = cli(
        "prune", str(demo_root), "--repo", "foo", "--delete-repo", "--apply", "--yes"
    )
    assert code == 0, err
    foo = repo_dir(demo_root, "foo")
    assert sorted(p.name for p in foo.iterdir()) == ["bar"]
    inv = scan(resolve_root(demo_root))
    assert "foo" not in inv.repos
    assert inv.repos["foo/bar"].valid_tags == pushed["final_tags"]["foo/bar"]


def test_saved_plan_applies_only_while_nothing_changed(
    cli: Any, demo_root: Path, tmp_path: Path, pushed: Pushed
) -> None:
    plan_file = tmp_path / "plan.json"
    code, _, err = cli("prune", str(demo_root), "--untagged", "--plan-out", str(plan_file))
    assert code == 0, err
    saved = json.loads(plan_file.read_text())
    assert saved["bytes_to_free"] > 0
    # A link touched since the plan: the whole plan is refused and nothing moves.
    api_v1 = manifest_digest(pushed, "api-v1").split(":")[1]
    revisions = repo_dir(demo_root, "team/app/api") / "_manifests/revisions/sha256"
    os.utime(revisions / api_v1 / "link", (1, 1))
    before = tree_fingerprint(demo_root / "docker")
    code, _, err = cli("prune", str(demo_root), "--apply-plan", str(plan_file), "--yes")
    assert code == 4 and "tree changed since the plan" in err
    assert tree_fingerprint(demo_root / "docker") == before
    # A plan naming a path outside ROOT is refused too.
    code, _, err = cli("prune", str(demo_root), "--untagged", "--plan-out", str(plan_file))
    tampered = json.loads(plan_file.read_text())
    tampered["actions"][0]["path"] = "docker/registry/v2/repositories/../../../../etc"
    plan_file.write_text(json.dumps(tampered))
    code, _, err = cli("prune", str(demo_root), "--apply-plan", str(plan_file), "--yes")
    assert code == 4 and "outside ROOT" in err
    # The untouched plan applies.
    code, _, err = cli("prune", str(demo_root), "--untagged", "--plan-out", str(plan_file))
    code, _, err = cli("prune", str(demo_root), "--apply-plan", str(plan_file), "--yes")
    assert code == 0, err
    code, out, _ = cli("prune", str(demo_root), "--untagged")
    assert "nothing to remove" in out


def test_confirmation(cli: Any, demo_root: Path) -> None:
    before = tree_fingerprint(demo_root / "docker")
    args = ("prune", str(demo_root), "--untagged", "--apply")
    code, _, err = cli(*args)
    assert code == 4 and "pass --yes" in err
    code, _, err = cli(*args, stdin="no\n", terminal=True)
    assert code == 3 and "not confirmed" in err
    assert "+----" in err and str(demo_root) in err
    assert tree_fingerprint(demo_root / "docker") == before
    code, _, err = cli(*args, stdin="yes\n", terminal=True)
    assert code == 0, err
    assert tree_fingerprint(demo_root / "docker") != before


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _write_lock(root: Path, host: str, pid: int) -> None:
    (root / ".storscan").mkdir(exist_ok=True)
    info = {"host": host, "pid": pid, "started": "2026-01-01T00:00:00Z", "command": "prune"}
    (root / ".storscan/lock").write_text(json.dumps(info))


def test_held_lock_refuses_before_the_walk(
    cli: Any, demo_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write_lock(demo_root, socket.gethostname(), os.getpid())

    def no_walk(*a: object, **k: object) -> None:
        raise AssertionError("walked despite the lock")

    monkeypatch.setattr("storscan.scan.scan", no_walk)
    code, _, err = cli("prune", str(demo_root), "--untagged", "--apply", "--yes")
    assert code == 4
    assert f"pid {os.getpid()} on host {socket.gethostname()}" in err
    assert "break-lock" in err
    code, _, err = cli("gc", str(demo_root), "--apply", "--yes", "--now", NOW)
    assert code == 4 and "locked" in err
    code, _, err = cli("break-lock", str(demo_root))
    assert code == 4 and "running" in err


def test_stale_and_foreign_locks(cli: Any, demo_root: Path) -> None:
    _write_lock(demo_root, socket.gethostname(), _dead_pid())
    code, _, err = cli("prune", str(demo_root), "--untagged", "--apply", "--yes")
    assert code == 0, err
    assert "stale lock" in err
    assert not (demo_root / ".storscan/lock").exists()
    _write_lock(demo_root, "elsewhere.example", 1)
    code, _, err = cli("prune", str(demo_root), "--uploads-older-than", "1h", "--apply", "--yes")
    assert code == 4 and "elsewhere.example" in err
    code, _, err = cli("break-lock", str(demo_root))
    assert code == 0 and "pid 1 on host elsewhere.example" in err
    assert not (demo_root / ".storscan/lock").exists()


def test_no_write_access_refuses_early(
    cli: Any, demo_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("storscan.lock._writable", lambda path: False)
    code, _, err = cli("prune", str(demo_root), "--untagged", "--apply", "--yes")
    assert code == 4 and "no write access" in err
    assert not (demo_root / ".storscan").exists()


def test_bad_flags_exit_2(cli: Any, demo_root: Path) -> None:
    assert cli("prune", str(demo_root))[0] == 2
    assert cli("prune", str(demo_root), "--older-than", "soon")[0] == 2
    assert cli("prune", str(demo_root), "--apply-plan", "x.json", "--untagged")[0] == 2
    assert cli("gc", str(demo_root), "--registry-cmd", "'unclosed")[0] == 2
    assert cli("trash", str(demo_root), "--apply")[0] == 2


def test_interrupt_stops_between_moves_and_the_journal_stays_consistent(
    demo_root: Path,
) -> None:
    root = resolve_root(demo_root)
    inv = scan(root)
    plan = build_plan(inv, build_selection(untagged=True, now=inv_now()))
    assert len(plan.actions) == 4
    calls = iter([False, False, True])
    with pytest.raises(CancelledError, match="interrupted after 2 of 4 moves"):
        apply_plan(root, plan, run_id="run-1", stop=lambda: next(calls))
    records = read_journal(root, "run-1")
    assert [r["src"] for r in records] == [a.path for a in plan.actions[:2]]
    for r in records:
        assert (demo_root / r["dst"]).exists() and not (demo_root / r["src"]).exists()


def inv_now() -> Any:
    from datetime import UTC, datetime

    return datetime(2027, 1, 1, tzinfo=UTC)


def test_ctrl_c_becomes_a_flag() -> None:
    with interruptible() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_trash_lists_and_purges(cli: Any, demo_root: Path, pushed: Pushed) -> None:
    uploads = [
        repo_dir(demo_root, u["repo"]) / "_uploads" / u["uuid"]
        for u in pushed["unfinished_uploads"]
    ]
    files = [p for u in uploads for p in u.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files if p.name == "data") == 900  # 600 + 300 pushed
    upload_bytes = sum(p.stat().st_size for p in files)
    code, _, err = cli(
        "prune", str(demo_root), "--uploads-older-than", "1h", "--apply", "--yes", "--now", NOW
    )
    assert code == 0, err
    run_id = run_id_of(err)
    code, out, _ = cli("trash", str(demo_root))
    assert code == 0
    [line] = [x for x in out.splitlines() if x.startswith(run_id)]
    assert line.split()[2:4] == ["2", str(upload_bytes)]
    code, out, err = cli("trash", str(demo_root), "--purge-older-than", "1d", "--now", NOW)
    assert code == 0 and "dry run" in err
    assert (demo_root / ".storscan/quarantine" / run_id).exists()
    code, out, err = cli(
        "trash", str(demo_root), "--purge-older-than", "1d", "--apply", "--yes", "--now", NOW
    )
    assert code == 0, err
    assert "purged 1 quarantines" in err
    assert not (demo_root / ".storscan/quarantine" / run_id).exists()
    assert v2_dir(demo_root).is_dir()
