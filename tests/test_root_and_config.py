"""Where the tree is: a storage root, the v2 directory, or a registry config.yml (and its env).

Errors are one line on stderr with exit 2; stdout carries only the report. Runs that depend on
the process (its environment, its real streams) go through ``python -m storscan``; the rest run
in this process (CliRunner).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import (
    EXIT_OK,
    EXIT_USAGE,
    Pushed,
    Run,
    clean_env,
    cli,
    revision_link,
    storscan,
)
from tests.support.registry import free_port, write_config
from tests.support.tree import v2_dir

ROOT_ENV = "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY"
COUNT_FIELDS = (
    "repositories",
    "tags",
    "manifests",
    "untagged_manifests",
    "blobs",
    "blob_bytes",
    "referenced_bytes",
    "unreferenced_blobs",
    "unreferenced_bytes",
    "untagged_only_bytes",
    "uploads",
    "upload_bytes",
)


def summary(run: Run) -> dict[str, Any]:
    assert run.code == EXIT_OK, run.describe()
    doc: dict[str, Any] = json.loads(run.stdout)
    return dict(doc["summary"])


def assert_demo(run: Run, pushed: Pushed) -> None:
    """The figures are the demo's: every stored blob, every repository."""
    got = summary(run)
    assert got["blobs"] == pushed["totals"]["blob_count"] + pushed["totals"]["manifest_count"]
    assert got["blob_bytes"] == pushed["totals"]["store_bytes"]
    assert got["repositories"] == len(pushed["repositories"])


def assert_empty(run: Run) -> None:
    got = summary(run)
    assert {k: got[k] for k in COUNT_FIELDS} == dict.fromkeys(COUNT_FIELDS, 0)
    assert json.loads(run.stdout)["repositories"] == []


def assert_one_line_error(run: Run, *needles: str) -> str:
    assert run.code == EXIT_USAGE, run.describe()
    assert run.stdout == ""
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def config_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yml"
    path.write_text(text)
    return path


# --- ROOT ------------------------------------------------------------------------------------


def test_storage_root(demo_master: Path, pushed: Pushed) -> None:
    assert_demo(cli("report", demo_master, "--format", "json"), pushed)


def test_v2_directory_itself(demo_master: Path, pushed: Pushed) -> None:
    assert_demo(cli("report", v2_dir(demo_master), "--format", "json"), pushed)


def test_empty_directory_is_an_empty_registry(tmp_path: Path) -> None:
    empty = tmp_path / "nothing-yet"
    empty.mkdir()
    run = storscan("report", empty, "--format", "json")
    assert_empty(run)
    assert str(empty) in run.stderr  # the warning names the directory
    assert list(empty.iterdir()) == []


def test_empty_v2_tree_is_an_empty_registry(tmp_path: Path) -> None:
    v2 = tmp_path / "store" / "docker" / "registry" / "v2"
    v2.mkdir(parents=True)
    assert_empty(cli("report", tmp_path / "store", "--format", "json"))


def test_scheduler_state_beside_the_tree_is_ignored(demo_tree: Path, pushed: Pushed) -> None:
    """A pull-through cache keeps scheduler-state.json at the driver root, beside docker/."""
    (demo_tree / "scheduler-state.json").write_text("{}")
    assert_demo(cli("report", demo_tree, "--format", "json"), pushed)


def test_only_scheduler_state_is_an_empty_registry(tmp_path: Path) -> None:
    (tmp_path / "scheduler-state.json").write_text("{}")
    assert_empty(cli("report", tmp_path, "--format", "json"))


def test_non_registry_directory(tmp_path: Path) -> None:
    other = tmp_path / "photos"
    other.mkdir()
    (other / "holiday.jpg").write_bytes(b"\xff\xd8")
    line = assert_one_line_error(
        cli("report", other, "--format", "json"), str(other), "docker/registry/v2"
    )
    assert "holiday.jpg" in line  # what was found


@pytest.mark.parametrize("depth", [1, 2])
def test_non_registry_directory_names_the_tree_below(
    tmp_path: Path, demo_master: Path, depth: int
) -> None:
    outer = tmp_path / "srv"
    below = outer / "registry" if depth == 1 else outer / "data" / "registry"
    shutil.copytree(demo_master, below, symlinks=True)
    assert_one_line_error(cli("report", outer), str(below))


@pytest.mark.parametrize("inside", ["docker", "docker/registry"])
def test_pointing_inside_the_storage_root_names_the_tree(demo_master: Path, inside: str) -> None:
    """A common slip: ROOT/docker or ROOT/docker/registry. The v2 tree lies one or two below."""
    assert_one_line_error(cli("report", demo_master / inside), str(v2_dir(demo_master)))


def test_missing_path(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-dir"
    assert_one_line_error(storscan("report", missing), str(missing))


def test_file_instead_of_directory(tmp_path: Path) -> None:
    path = tmp_path / "a-file"
    path.write_text("x")
    assert_one_line_error(cli("scan", path), str(path))


def test_root_and_config_together(tmp_path: Path, demo_master: Path) -> None:
    config = tmp_path / "config.yml"
    write_config(demo_master, config, free_port())
    run = cli("report", demo_master, "--config", config)
    assert_one_line_error(run)


def test_no_root_at_all() -> None:
    assert_one_line_error(cli("report"))


# --- --config --------------------------------------------------------------------------------


def test_config_rootdirectory(tmp_path: Path, demo_master: Path, pushed: Pushed) -> None:
    config = tmp_path / "config.yml"
    write_config(demo_master, config, free_port())  # the harness's real registry config
    assert_demo(cli("report", "--config", config, "--format", "json"), pushed)


def test_env_override_wins_over_the_file(tmp_path: Path, demo_master: Path, pushed: Pushed) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    config = tmp_path / "config.yml"
    write_config(elsewhere, config, free_port())
    env = clean_env(**{ROOT_ENV: str(demo_master)})
    assert_demo(storscan("report", "--config", config, "--format", "json", env=env), pushed)


def test_env_override_can_point_at_an_empty_root(tmp_path: Path, demo_master: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    config = tmp_path / "config.yml"
    write_config(demo_master, config, free_port())
    env = clean_env(**{ROOT_ENV: str(elsewhere)})
    assert_empty(storscan("report", "--config", config, "--format", "json", env=env))


def test_readonly_maintenance_is_reported(tmp_path: Path, demo_master: Path) -> None:
    config = tmp_path / "config.yml"
    write_config(demo_master, config, free_port(), readonly=True)
    run = cli("scan", "--config", config, "-v")
    assert run.code == EXIT_OK, run.describe()
    [line] = [ln for ln in run.stderr.splitlines() if "readonly" in ln]
    assert line.rstrip().endswith("on")


def test_other_storage_driver_is_not_supported_yet(tmp_path: Path) -> None:
    config = config_file(
        tmp_path,
        "version: 0.1\n"
        "storage:\n"
        "  s3:\n"
        "    region: us-east-1\n"
        "    bucket: images\n"
        "  delete:\n"
        "    enabled: true\n",
    )
    assert_one_line_error(storscan("report", "--config", config), "s3", "not supported yet")


def test_invalid_yaml(tmp_path: Path) -> None:
    config = config_file(tmp_path, "storage:\n  filesystem:\n    rootdirectory: [unclosed\n")
    assert_one_line_error(cli("report", "--config", config), str(config))


def test_missing_config_file(tmp_path: Path) -> None:
    assert_one_line_error(cli("report", "--config", tmp_path / "nope.yml"))


@pytest.mark.skipif(Path("/var/lib/registry").exists(), reason="/var/lib/registry exists here")
def test_config_without_rootdirectory_uses_the_registry_default(tmp_path: Path) -> None:
    config = config_file(tmp_path, "version: 0.1\nstorage:\n  filesystem: {}\n")
    assert_one_line_error(cli("report", "--config", config), "/var/lib/registry")


# --- streams -----------------------------------------------------------------------------------


def test_stdout_carries_only_the_report(demo_tree: Path, pushed: Pushed) -> None:
    """A damaged tree makes the walk warn: on stderr, while stdout stays parseable JSON."""
    digest = next(m["digest"] for m in pushed["manifests"] if m["name"] == "foo")
    revision_link(demo_tree, "foo", digest).write_bytes(b"")
    run = storscan("report", demo_tree, "--format", "json")
    assert run.code == EXIT_OK, run.describe()
    json.loads(run.stdout)
    assert run.stderr.strip(), "the walk's problem is reported on stderr"
    assert "audit" in run.stderr  # and it says where to look next
