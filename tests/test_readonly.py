"""The read-only commands change nothing: every path, its content, mode and mtime stay the same.

The tree is the demo plus damage a careless tool might "repair" (an empty link, a missing blob,
a symbolic link out of the tree), and its parent directory is watched too (nothing written
beside the storage root). Commands run in this process (CliRunner) except the audit, which runs
through the real entry point.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.helpers import EXIT_FINDINGS, NOW, Log, Run, cli, revision_link, storscan
from tests.support.tree import blob_data_path, load_pushed, repo_dir, tree_fingerprint


@pytest.fixture(scope="module")
def damaged(demo_master: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A damaged copy of the demo inside a directory of its own, with an outside target."""
    home = tmp_path_factory.mktemp("readonly")
    log = Log(load_pushed())
    root = Path(shutil.copytree(demo_master, home / "root", symlinks=True))
    revision_link(root, "foo", log.digest("foo")).write_bytes(b"")
    shutil.rmtree(blob_data_path(root, log.digest("scratch-layer")).parent)
    outside = home / "outside"
    shutil.copytree(repo_dir(root, "foo/bar"), outside, symlinks=True)
    repo_dir(root, "linked").symlink_to(outside, target_is_directory=True)
    return root


def fingerprint(root: Path) -> tuple[str, str]:
    """The storage root's tree and everything beside it (the parent holds the outside target)."""
    return tree_fingerprint(root), tree_fingerprint(root.parent)


COMMANDS = [
    ("report", "--format", "table"),
    ("report", "--format", "json", "--scope", "tagged"),
    ("report", "--format", "csv"),
    ("report", "--format", "markdown"),
    ("scan",),
    ("graph", "--format", "graphml"),
    ("graph", "--format", "json"),
]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_command_changes_nothing(damaged: Path, command: tuple[str, ...]) -> None:
    before = fingerprint(damaged)
    run = cli(command[0], damaged, *command[1:])
    assert run.code == 0, run.describe()
    assert run.stdout
    assert fingerprint(damaged) == before


def test_audit_verify_changes_nothing(damaged: Path) -> None:
    before = fingerprint(damaged)
    run: Run = storscan("audit", damaged, "--verify", "--format", "json", "--now", NOW)
    assert run.code == EXIT_FINDINGS, run.describe()  # the damage is found...
    assert "link_empty" in run.stdout and "symlink_skipped" in run.stdout
    assert fingerprint(damaged) == before  # ...and left alone

    table = cli("audit", damaged, "--verify", "--fail-on", "never", "--now", NOW)
    assert "link_empty" in table.stdout, table.describe()
    assert fingerprint(damaged) == before
