"""The command line: help, usage errors, the exit-code contract, ``scan``, ``--output``.

Exit codes: 0 done, 1 findings at or above --fail-on, 2 usage error or unreadable root,
3 cancelled, 4 refused. The typer app keeps the contract itself, so most cases run in this
process (CliRunner); test_entry_point_exit_codes checks it through ``python -m storscan``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import EXIT_FINDINGS, EXIT_OK, EXIT_USAGE, NOW, Pushed, cli, storscan

COMMANDS = ("report", "audit", "scan", "graph")


def test_help_lists_commands_and_exit_codes() -> None:
    run = storscan("--help")
    assert run.code == EXIT_OK, run.describe()
    for command in COMMANDS:
        assert command in run.stdout
    text = " ".join(run.stdout.split())
    assert "Exit codes" in text
    for code, meaning in [
        ("0", "done"),
        ("1", "findings"),
        ("2", "usage"),
        ("3", "cancel"),
        ("4", "refused"),
    ]:
        assert f"{code} {meaning}" in text, (code, meaning)


@pytest.mark.parametrize(
    ("command", "options"),
    [
        ("report", ("--scope", "--format", "--sort", "--top", "--output", "--config")),
        ("audit", ("--format", "--fail-on", "--verify", "--upload-age", "--output", "--config")),
        ("scan", ("--config",)),
        ("graph", ("--format", "--output", "--config")),
    ],
)
def test_command_help(command: str, options: tuple[str, ...]) -> None:
    run = cli(command, "--help")
    assert run.code == EXIT_OK, run.describe()
    for option in options:
        assert option in run.stdout, option


@pytest.mark.parametrize(
    "args",
    [
        ("report", "{root}", "--format", "xml"),
        ("report", "{root}", "--scope", "everything"),
        ("report", "{root}", "--sort", "size"),
        ("report", "{root}", "--top", "0"),
        ("report", "{root}", "--no-such-option"),
        ("audit", "{root}", "--fail-on", "sometimes"),
        ("graph", "{root}", "--format", "dot"),
        ("frobnicate", "{root}"),
    ],
    ids=lambda a: "-".join(a).replace("{root}", "ROOT"),
)
def test_usage_errors_exit_2(demo_master: Path, args: tuple[str, ...]) -> None:
    run = cli(*(a.format(root=demo_master) for a in args))
    assert run.code == EXIT_USAGE, run.describe()
    assert run.stdout == ""
    assert run.stderr.strip()


@pytest.mark.parametrize(
    ("option", "value"),
    [("--upload-age", "soon"), ("--upload-age", "7 days"), ("--now", "yesterday")],
)
def test_bad_values_are_one_line_usage_errors(demo_master: Path, option: str, value: str) -> None:
    run = cli("audit", demo_master, option, value)
    assert run.code == EXIT_USAGE, run.describe()
    assert run.stdout == ""
    [line] = run.stderr.strip().splitlines()
    assert option in line and value in line


def _tree(kind: str, request: pytest.FixtureRequest) -> Path:
    """A tree whose worst finding is of the kind named.

    errors: the demo (2.8 -m hazards, and its empty repositories as warnings); warnings: the
    healthy copy plus an empty repository; info: the healthy copy as it is.
    """
    if kind == "errors":
        root: Path = request.getfixturevalue("demo_tree")
        return root
    root = request.getfixturevalue("healthy_root")
    if kind == "warnings":
        (root / "docker/registry/v2/repositories/lonely/_uploads").mkdir(parents=True)
    return root


@pytest.mark.parametrize(
    ("tree", "fail_on", "code"),
    [
        ("errors", None, EXIT_FINDINGS),
        ("errors", "error", EXIT_FINDINGS),
        ("errors", "warning", EXIT_FINDINGS),
        ("errors", "never", EXIT_OK),
        ("warnings", None, EXIT_OK),
        ("warnings", "error", EXIT_OK),
        ("warnings", "warning", EXIT_FINDINGS),
        ("warnings", "never", EXIT_OK),
        ("info", "error", EXIT_OK),
        ("info", "warning", EXIT_OK),
    ],
)
def test_fail_on_threshold(
    request: pytest.FixtureRequest, tree: str, fail_on: str | None, code: int
) -> None:
    root = _tree(tree, request)
    threshold = () if fail_on is None else ("--fail-on", fail_on)
    run = cli("audit", root, "--format", "json", "--now", NOW, "-j", "1", *threshold)
    assert run.code == code, run.describe()
    counts = json.loads(run.stdout)["counts"]
    worst = "error" if counts["error"] else "warning" if counts["warning"] else "info"
    assert worst == tree.rstrip("s")  # the tree holds what its name says


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (("audit", "{root}", "--format", "json", "--fail-on", "error"), EXIT_FINDINGS),
        (("audit", "{root}", "--format", "json", "--fail-on", "never"), EXIT_OK),
        (("report", "{root}/docker"), EXIT_USAGE),
        (("report", "{root}", "--no-such-option"), EXIT_USAGE),
    ],
    ids=["findings", "never", "not-a-root", "bad-option"],
)
def test_entry_point_exit_codes(demo_master: Path, args: tuple[str, ...], code: int) -> None:
    """``python -m storscan`` (the console script's main) maps results the same way."""
    run = storscan(*(a.format(root=demo_master) for a in args), "--now", NOW)
    assert run.code == code, run.describe()
    if code == EXIT_USAGE:
        assert run.stdout == ""
    else:
        assert json.loads(run.stdout)["counts"]["error"] > 0


def test_scan_summary(demo_master: Path, pushed: Pushed) -> None:
    run = cli("scan", demo_master)
    assert run.code == EXIT_OK, run.describe()
    lines = {ln.split()[0]: ln.split()[1:] for ln in run.stdout.splitlines() if ln.strip()}
    assert lines["repositories"][0] == str(len(pushed["repositories"]))
    assert lines["tags"][0] == str(sum(len(t) for t in pushed["final_tags"].values()))
    assert lines["revisions"][0] == str(sum(not m["deleted"] for m in pushed["manifests"]))
    totals = pushed["totals"]
    assert lines["blobs"][0] == str(totals["blob_count"] + totals["manifest_count"])
    assert f"({totals['store_bytes']}" in " ".join(lines["blobs"])
    assert "walk" in lines  # how long the walk took
    float(lines["walk"][0])


def test_audit_output_file(demo_master: Path, tmp_path: Path) -> None:
    target = tmp_path / "audit.json"
    run = storscan(
        "audit", demo_master, "--format", "json", "--output", target, "--fail-on", "error"
    )
    assert run.code == EXIT_FINDINGS, run.describe()  # the exit code survives --output
    assert run.stdout == ""
    assert json.loads(target.read_text())["schema_version"] == 1


def test_cli_runner_sees_the_exit_code_contract(demo_master: Path, tmp_path: Path) -> None:
    """The typer app itself, not only the console-script wrapper, keeps the contract.

    CliRunner (and anything else invoking ``storscan.cli.app``) must see 1 for findings at the
    threshold and 2 for an unreadable root, as ``python -m storscan`` does.
    """
    audit = cli("audit", demo_master, "--format", "json", "--now", NOW)
    assert audit.code == EXIT_FINDINGS, audit.describe()
    missing = cli("report", tmp_path / "no-such-dir")
    assert missing.code == EXIT_USAGE, missing.describe()
