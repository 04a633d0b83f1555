"""Render the usage report as a table for people, or JSON, CSV and Markdown for machines."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from storscan.usage import REPO_FIELDS, SCHEMA_VERSION, RepoUsage, Usage

FORMATS = ("table", "json", "csv", "markdown")
SORTS = ("total", "exclusive", "shared", "name")


def ordered(usage: Usage, sort: str, top: int | None) -> list[RepoUsage]:
    """Repositories in report order: largest first (name breaks ties), or by name."""
    rows = list(usage.repositories)
    if sort == "name":
        rows.sort(key=lambda r: r.name)
    else:
        rows.sort(key=lambda r: (-getattr(r, f"{sort}_bytes"), r.name))
    return rows[:top] if top is not None else rows


def as_dict(
    usage: Usage,
    root: str,
    sort: str = "total",
    top: int | None = None,
    readonly: bool | None = None,
) -> dict[str, Any]:
    """The JSON document (``schema_version`` 1); scripts depend on these names."""
    repos = []
    for row in ordered(usage, sort, top):
        item = {k: getattr(row, k) for k in REPO_FIELDS}
        item["markers"] = list(row.markers)
        repos.append(item)
    doc = {
        "schema_version": SCHEMA_VERSION,
        "root": root,
        "scope": usage.scope,
        "summary": asdict(usage.summary),
        "repositories": repos,
    }
    if readonly is not None:  # known only from --config: storage.maintenance.readonly
        doc["registry_readonly"] = readonly
    return doc


def render(
    usage: Usage,
    fmt: str,
    root: str,
    sort: str = "total",
    top: int | None = None,
    readonly: bool | None = None,
) -> str:
    """The report in format ``fmt`` as text ending with a newline."""
    if fmt == "json":
        return json.dumps(as_dict(usage, root, sort, top, readonly), indent=2) + "\n"
    from storscan.report import tables

    rows = ordered(usage, sort, top)
    if fmt == "csv":
        return tables.to_csv(rows)
    if fmt == "markdown":
        return tables.to_markdown(usage, rows, root)
    return tables.to_table(usage, rows, root, readonly)
