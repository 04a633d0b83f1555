"""Every figure of ``storscan report`` on the real-registry demo, against the push log.

The expected values come from ``tests/oracle.py`` (set arithmetic over demo.pushed.json) and
from literal sizes read off the push log; never from storscan's output.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import (
    EXIT_OK,
    Log,
    Pushed,
    cli,
    layer_link,
    revision_link,
    storscan,
    tag_dir,
    write_link,
)
from tests.oracle import CONFIG_CREATED, SCOPES, Oracle

INT_FIELDS = (
    "tags",
    "manifests",
    "untagged_manifests",
    "total_bytes",
    "exclusive_bytes",
    "shared_bytes",
    "blobs",
    "uploads",
    "upload_bytes",
)


def report(root: Path, *args: object) -> dict[str, Any]:
    run = cli("report", root, "--format", "json", *args)
    assert run.code == EXIT_OK, run.describe()
    doc: dict[str, Any] = json.loads(run.stdout)
    return doc


def rows_by_name(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in doc["repositories"]}


@pytest.fixture(scope="module")
def docs(demo_master: Path) -> dict[str, dict[str, Any]]:
    """``report --format json`` of the demo, per scope (run once per module)."""
    return {scope: report(demo_master, "--scope", scope) for scope in SCOPES}


def latest_link_mtime(root: Path, repo: str) -> float | None:
    """Newest mtime of the repository's tag current links and revision links, from the disk."""
    manifests = root / "docker/registry/v2/repositories" / repo / "_manifests"
    links = [*manifests.glob("tags/*/current/link"), *manifests.glob("revisions/sha256/*/link")]
    return max((p.stat().st_mtime for p in links), default=None)


# --- every figure, both scopes ------------------------------------------------------------------


@pytest.mark.parametrize("scope", SCOPES)
def test_json_figures_match_the_push_log(
    docs: dict[str, dict[str, Any]], pushed: Pushed, scope: str
) -> None:
    oracle = Oracle(pushed)
    doc = docs[scope]

    assert doc["schema_version"] == 1
    assert doc["scope"] == scope
    rows = rows_by_name(doc)
    assert sorted(rows) == oracle.repos
    for repo in oracle.repos:
        got = {k: rows[repo][k] for k in INT_FIELDS}
        assert got == oracle.row(repo, scope), repo
        assert rows[repo]["markers"] == oracle.markers(repo), repo

    want = oracle.summary(scope)
    summary = doc["summary"]
    ratio = want.pop("dedup_ratio")
    assert {k: summary[k] for k in want} == want
    assert summary["dedup_ratio"] == pytest.approx(ratio, abs=5e-5)


def test_latest_push_and_newest_created(
    demo_master: Path, docs: dict[str, dict[str, Any]], pushed: Pushed
) -> None:
    """latest_push: newest tag or revision link mtime; absent where there is neither."""
    oracle = Oracle(pushed)
    rows = rows_by_name(docs["all"])
    for repo in oracle.repos:
        newest = latest_link_mtime(demo_master, repo)
        has_images = bool(oracle.revisions[repo] or oracle.tags[repo])
        assert (newest is not None) == has_images, repo
        if newest is None:
            assert rows[repo]["latest_push"] is None, repo
            assert rows[repo]["newest_created"] is None, repo
            continue
        stamp = datetime.fromisoformat(rows[repo]["latest_push"].replace("Z", "+00:00"))
        assert abs(stamp.timestamp() - newest) < 1e-3, repo
        assert rows[repo]["newest_created"] == CONFIG_CREATED, repo


# --- literal spot checks (sizes read off demo.pushed.json) -----------------------------------


def test_shared_base_layer_is_counted_in_every_repository_that_mounts_it(
    docs: dict[str, dict[str, Any]], log: Log, pushed: Pushed
) -> None:
    base = log.digest("base-layer")
    assert log.size("base-layer") == 4096
    mounted = {m["to"] for m in pushed["cross_mounts"] if m["digest"] == base}
    users = mounted | {"library/alpine"}
    assert users == {"library/alpine", "team/app/api", "team/app/web", "tools/cli", "foo"}
    for scope in SCOPES:
        for repo, row in rows_by_name(docs[scope]).items():
            # No other blob is shared between repositories in the demo.
            assert row["shared_bytes"] == (4096 if repo in users else 0), (scope, repo)
            assert row["exclusive_bytes"] == row["total_bytes"] - row["shared_bytes"]


def test_literal_figures(docs: dict[str, dict[str, Any]]) -> None:
    rows = rows_by_name(docs["all"])
    # alpine manifest 524 + config 400 + base 4096; only the base is shared.
    assert rows["library/alpine"]["total_bytes"] == 524 + 400 + 4096
    assert rows["library/alpine"]["exclusive_bytes"] == 524 + 400
    # index 703, children 704 + 704, configs 440 + 450, layers 1500 + 2500, base 4096.
    assert rows["tools/cli"]["total_bytes"] == 703 + 704 + 704 + 440 + 450 + 1500 + 2500 + 4096
    # list 741, children 524 + 524, configs 490 + 500, layers 1100 + 1300; nothing shared.
    busybox = 741 + 524 + 524 + 490 + 500 + 1100 + 1300
    assert rows["library/busybox"]["total_bytes"] == busybox
    assert rows["library/busybox"]["exclusive_bytes"] == busybox
    # web 704 + config 430 + layer 3000 + base, and the referrer 801 + {} 2 + sbom 700.
    assert rows["team/app/web"]["total_bytes"] == 704 + 430 + 3000 + 4096 + 801 + 2 + 700
    # api-v1 (732 + 410 + 1000) and api-v2 (732 + 420 + 2000) over the base.
    assert rows["team/app/api"]["total_bytes"] == 732 + 410 + 1000 + 732 + 420 + 2000 + 4096
    assert rows["team/app/api"]["untagged_manifests"] == 1
    # bar-1.0 only: 502 + 470 + 1800 (bar-old was deleted, the orphan is used by nothing).
    assert rows["foo/bar"]["total_bytes"] == 502 + 470 + 1800
    assert rows["foo/bar"]["manifests"] == 1
    # Upload: 600 bytes of data + 20 of startedat + 2 x 108 of hash state.
    assert rows["team/app/api"]["upload_bytes"] == 600 + 20 + 216
    assert rows["incoming/partial"]["upload_bytes"] == 300 + 20 + 216
    assert rows["scratch/blobs"]["total_bytes"] == 0

    tagged = rows_by_name(docs["tagged"])
    assert tagged["team/app/api"]["total_bytes"] == 732 + 420 + 2000 + 4096
    assert tagged["team/app/web"]["total_bytes"] == rows["team/app/web"]["total_bytes"]
    assert tagged["tools/cli"]["total_bytes"] == rows["tools/cli"]["total_bytes"]


def test_literal_summary(docs: dict[str, dict[str, Any]]) -> None:
    summary = docs["all"]["summary"]
    assert summary["repositories"] == 9
    # alpine 3.19 and latest, api v1, web v1, cli 1.0, busybox 1.36, foo latest, foo/bar 1.0
    assert summary["tags"] == 8
    assert summary["manifests"] == 13  # 14 pushed, bar-old deleted
    assert summary["blobs"] == 26 + 14
    assert summary["blob_bytes"] == 29048 + 9129
    # bar-old manifest 502, config 480, layer 2200; the orphan 800; the scratch blob 900.
    assert summary["unreferenced_blobs"] == 5
    assert summary["unreferenced_bytes"] == 502 + 480 + 2200 + 800 + 900
    assert summary["referenced_bytes"] == 29048 + 9129 - (502 + 480 + 2200 + 800 + 900)
    # api-v1's manifest, config and layer are what only an untagged revision keeps.
    assert summary["untagged_only_bytes"] == 732 + 410 + 1000
    assert summary["uploads"] == 2
    assert summary["upload_bytes"] == 600 + 300 + 2 * (20 + 216)


def test_figures_follow_a_changed_tree(demo_tree: Path, pushed: Pushed, log: Log) -> None:
    """Untag api-v2, delete foo as the API would: the oracle and the report move together."""
    shutil.rmtree(tag_dir(demo_tree, "team/app/api", "v1"))
    shutil.rmtree(tag_dir(demo_tree, "foo", "latest"))
    revision_link(demo_tree, "foo", log.digest("foo")).unlink()
    pushed["final_tags"].pop("team/app/api")
    pushed["final_tags"].pop("foo")
    next(m for m in pushed["manifests"] if m["name"] == "foo")["deleted"] = True
    oracle = Oracle(pushed)
    for scope in SCOPES:
        doc = report(demo_tree, "--scope", scope)
        rows = rows_by_name(doc)
        for repo in oracle.repos:
            assert {k: rows[repo][k] for k in INT_FIELDS} == oracle.row(repo, scope), repo
    summary = report(demo_tree)["summary"]
    # foo's manifest 732, config 460 and layer 1200 join the five unreferenced blobs.
    assert summary["unreferenced_bytes"] == 4882 + 732 + 460 + 1200
    # Both api revisions are untagged now: only the shared base stays tagged elsewhere.
    assert summary["untagged_only_bytes"] == 732 + 410 + 1000 + 732 + 420 + 2000


def test_same_image_in_two_repositories(demo_tree: Path, pushed: Pushed, log: Log) -> None:
    """foo's image also pushed by digest to foo/bar: its blobs have exactly two owners."""
    foo = log.manifest("foo")
    write_link(revision_link(demo_tree, "foo/bar", foo["digest"]), foo["digest"])
    for ref in foo["references"]:
        write_link(layer_link(demo_tree, "foo/bar", ref), ref)
    pushed["manifests"].append({**foo, "repo": "foo/bar", "tags": []})
    oracle = Oracle(pushed)
    for scope in SCOPES:
        rows = rows_by_name(report(demo_tree, "--scope", scope))
        for repo in oracle.repos:
            assert {k: rows[repo][k] for k in INT_FIELDS} == oracle.row(repo, scope), repo
        # foo keeps nothing of its own under `all`; under `tagged` foo/bar does not keep it.
        foo_own = 732 + 460 + 1200
        assert rows["foo"]["exclusive_bytes"] == (0 if scope == "all" else foo_own)
        assert rows["foo"]["shared_bytes"] == (foo_own + 4096 if scope == "all" else 4096)


@pytest.mark.parametrize(
    "content",
    [b"", b"sha256:abc", b"%(digest)s\n"],
    ids=["empty", "malformed", "trailing-newline"],
)
def test_tag_without_a_valid_current_link_is_no_tag(
    demo_tree: Path, pushed: Pushed, log: Log, content: bytes
) -> None:
    """alpine's tags lose their current links (one has none, one an unreadable one).

    The registry cannot read either tag (its link parser rejects the bytes), so neither is a
    tag: the image is untagged and no longer kept under the ``tagged`` scope.
    """
    shutil.rmtree(tag_dir(demo_tree, "library/alpine", "latest") / "current")
    link = tag_dir(demo_tree, "library/alpine", "3.19") / "current" / "link"
    link.write_bytes(content % {b"digest": log.digest("alpine").encode()})
    pushed["final_tags"]["library/alpine"] = {}
    oracle = Oracle(pushed)
    for scope in SCOPES:
        rows = rows_by_name(report(demo_tree, "--scope", scope))
        for repo in oracle.repos:
            assert {k: rows[repo][k] for k in INT_FIELDS} == oracle.row(repo, scope), repo
    assert oracle.row("library/alpine", "all")["tags"] == 0
    assert oracle.row("library/alpine", "all")["untagged_manifests"] == 1
    assert oracle.row("library/alpine", "tagged")["total_bytes"] == 0


def test_index_child_without_revision_still_counts(
    demo_tree: Path, pushed: Pushed, log: Log
) -> None:
    """Anything an index names stays live, even a child with no revision in the repository."""
    revision_link(demo_tree, "tools/cli", log.digest("cli-arm64")).unlink()
    next(m for m in pushed["manifests"] if m["name"] == "cli-arm64")["deleted"] = True
    oracle = Oracle(pushed)
    for scope in SCOPES:
        rows = rows_by_name(report(demo_tree, "--scope", scope))
        assert {k: rows["tools/cli"][k] for k in INT_FIELDS} == oracle.row("tools/cli", scope)
    # Two revisions now, but the same bytes as before: the child manifest, config and layer.
    assert oracle.row("tools/cli", "all")["manifests"] == 2
    assert oracle.row("tools/cli", "all")["total_bytes"] == 11097


# --- other formats carry the same raw numbers ------------------------------------------------


def test_csv_carries_raw_bytes(demo_master: Path, pushed: Pushed) -> None:
    oracle = Oracle(pushed)
    run = cli("report", demo_master, "--format", "csv", "--scope", "tagged")
    assert run.code == EXIT_OK, run.describe()
    rows = {r["name"]: r for r in csv.DictReader(io.StringIO(run.stdout))}
    assert sorted(rows) == oracle.repos
    for repo in oracle.repos:
        got = {k: int(rows[repo][k]) for k in INT_FIELDS}
        assert got == oracle.row(repo, "tagged"), repo


def _markdown_tables(text: str) -> list[list[list[str]]]:
    """Each Markdown table as a list of rows of cells (separator rows dropped)."""
    tables: list[list[list[str]]] = []
    current: list[list[str]] | None = None
    for line in text.splitlines():
        if not line.startswith("|"):
            current = None
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if all(set(c) <= set(":-") and c for c in cells):
            continue
        if current is None:
            current = []
            tables.append(current)
        current.append(cells)
    return tables


def test_markdown_carries_raw_bytes(demo_master: Path, pushed: Pushed) -> None:
    oracle = Oracle(pushed)
    run = cli("report", demo_master, "--format", "markdown")
    assert run.code == EXIT_OK, run.describe()
    repo_table, summary_table = _markdown_tables(run.stdout)
    head, *body = repo_table
    name_col = head.index("repository")
    by_name = {row[name_col]: dict(zip(head, row, strict=True)) for row in body}
    assert sorted(by_name) == oracle.repos
    for repo in oracle.repos:
        want = oracle.row(repo, "all")
        for key in ("total_bytes", "exclusive_bytes", "shared_bytes", "upload_bytes"):
            assert int(by_name[repo][key]) == want[key], (repo, key)
    values = {row[0]: row[1] for row in summary_table[1:]}
    want_summary = oracle.summary("all")
    for key in ("blob_bytes", "referenced_bytes", "unreferenced_bytes", "untagged_only_bytes"):
        assert int(values[key]) == want_summary[key], key


def test_table_lists_every_repository(demo_master: Path, pushed: Pushed) -> None:
    run = cli("report", demo_master)
    assert run.code == EXIT_OK, run.describe()
    for repo in Oracle(pushed).repos:
        assert repo in run.stdout
    assert "38177" in run.stdout  # the summary keeps the exact byte count beside the human one


# --- ordering, --top, --output ------------------------------------------------------------------


@pytest.mark.parametrize("sort", ["total", "exclusive", "shared"])
def test_sort_by_size_is_largest_first(demo_master: Path, pushed: Pushed, sort: str) -> None:
    oracle = Oracle(pushed)
    doc = report(demo_master, "--sort", sort)
    key = f"{sort}_bytes"
    got = [r[key] for r in doc["repositories"]]
    assert got == sorted((oracle.row(r, "all")[key] for r in oracle.repos), reverse=True)


def test_sort_by_name(demo_master: Path, pushed: Pushed) -> None:
    doc = report(demo_master, "--sort", "name")
    assert [r["name"] for r in doc["repositories"]] == Oracle(pushed).repos


def test_top_keeps_the_largest_and_the_whole_summary(demo_master: Path, pushed: Pushed) -> None:
    oracle = Oracle(pushed)
    doc = report(demo_master, "--sort", "exclusive", "--top", 3)
    # exclusive: tools/cli 7001, team/app/web 5637, team/app/api 5294, then busybox 5179.
    assert [r["name"] for r in doc["repositories"]] == ["tools/cli", "team/app/web", "team/app/api"]
    assert [r["exclusive_bytes"] for r in doc["repositories"]] == [7001, 5637, 5294]
    assert doc["summary"]["repositories"] == len(oracle.repos)
    assert doc["summary"]["blob_bytes"] == 38177


def test_output_file(demo_master: Path, tmp_path: Path, pushed: Pushed) -> None:
    target = tmp_path / "out" / "figures.json"
    target.parent.mkdir()
    run = storscan("report", demo_master, "--format", "json", "--output", target)
    assert run.code == EXIT_OK, run.describe()
    assert run.stdout == ""
    doc = json.loads(target.read_text())
    assert (
        doc["summary"]["unreferenced_bytes"] == Oracle(pushed).summary("all")["unreferenced_bytes"]
    )
    assert sorted(p.name for p in target.parent.iterdir()) == ["figures.json"]


def test_output_directory(demo_master: Path, tmp_path: Path, pushed: Pushed) -> None:
    outdir = tmp_path / "reports"
    outdir.mkdir()
    run = cli("report", demo_master, "--format", "csv", "--output", outdir)
    assert run.code == EXIT_OK, run.describe()
    assert run.stdout == ""
    [written] = list(outdir.iterdir())
    assert written.suffix == ".csv"
    rows = {r["name"]: r for r in csv.DictReader(io.StringIO(written.read_text()))}
    oracle = Oracle(pushed)
    assert {r: int(rows[r]["total_bytes"]) for r in rows} == {
        r: oracle.row(r, "all")["total_bytes"] for r in oracle.repos
    }
