"""pandas tables for the report: aligned and humanized for people, raw bytes for CSV/Markdown."""

from __future__ import annotations

import humanize
import pandas as pd

from storscan.usage import REPO_FIELDS, RepoUsage, Summary, Usage

_COLUMNS = {
    "name": "REPOSITORY",
    "tags": "TAGS",
    "manifests": "MANIFESTS",
    "untagged_manifests": "UNTAGGED",
    "total_bytes": "TOTAL",
    "exclusive_bytes": "EXCLUSIVE",
    "shared_bytes": "SHARED",
    "uploads": "UPLOADS",
    "latest_push": "LATEST PUSH",
}


def frame(rows: list[RepoUsage]) -> pd.DataFrame:
    """One row per repository, integer byte columns."""
    return pd.DataFrame(
        [{f: getattr(r, f) for f in REPO_FIELDS} for r in rows], columns=list(REPO_FIELDS)
    )


def size(n: int) -> str:
    """Bytes for people: binary units, exact below 1 KiB."""
    return humanize.naturalsize(n, binary=True, format="%.1f")


def to_csv(rows: list[RepoUsage]) -> str:
    return str(frame(rows).to_csv(index=False, lineterminator="\n"))


def _summary_lines(s: Summary, scope: str) -> list[tuple[str, str]]:
    ratio = f"{s.dedup_ratio:.2f}x" if s.dedup_ratio is not None else "-"
    return [
        ("repositories", f"{s.repositories}"),
        ("tags", f"{s.tags}"),
        ("manifests", f"{s.manifests} ({s.untagged_manifests} untagged)"),
        ("blobs", f"{s.blobs}, {size(s.blob_bytes)} ({s.blob_bytes} bytes)"),
        ("referenced", f"{size(s.referenced_bytes)} ({s.referenced_bytes} bytes)"),
        (
            "unreferenced",
            f"{s.unreferenced_blobs} blobs, {size(s.unreferenced_bytes)} "
            f"({s.unreferenced_bytes} bytes): a correct GC frees this now",
        ),
        (
            "untagged only",
            f"{size(s.untagged_only_bytes)} ({s.untagged_only_bytes} bytes): "
            "freed by removing untagged manifests, then GC",
        ),
        ("uploads", f"{s.uploads}, {size(s.upload_bytes)} ({s.upload_bytes} bytes)"),
        (f"dedup ({scope})", ratio),
    ]


def _aligned(df: pd.DataFrame) -> list[str]:
    """Columns padded to their widest cell: names left-aligned, figures right-aligned."""
    widths = {c: max(len(c), int(df[c].str.len().max())) for c in df.columns}
    first = df.columns[0]

    def cell(col: str, text: str) -> str:
        return text.ljust(widths[col]) if col == first else text.rjust(widths[col])

    lines = ["  ".join(cell(c, c) for c in df.columns).rstrip()]
    for rec in df.itertuples(index=False):
        lines.append("  ".join(cell(c, v) for c, v in zip(df.columns, rec, strict=True)).rstrip())
    return lines


def to_table(usage: Usage, rows: list[RepoUsage], root: str, readonly: bool | None = None) -> str:
    df = frame(rows)
    mode = "" if readonly is None else f", registry read-only: {'yes' if readonly else 'no'}"
    out = [f"storscan report: {root} (scope: {usage.scope}{mode})", ""]
    if df.empty:
        out.append("no repositories")
    else:
        people = df[list(_COLUMNS)].copy()
        for col in ("total_bytes", "exclusive_bytes", "shared_bytes"):
            people[col] = people[col].map(size)
        people["latest_push"] = people["latest_push"].fillna("-").str.slice(0, 16)
        out.extend(_aligned(people.astype(str).rename(columns=_COLUMNS)))
    out.append("")
    width = max(len(k) for k, _ in _summary_lines(usage.summary, usage.scope))
    out.extend(f"{k:<{width}}  {v}" for k, v in _summary_lines(usage.summary, usage.scope))
    return "\n".join(out) + "\n"


def _md_escape(value: object) -> str:
    return str(value).replace("|", "\\|") if value is not None else ""


def to_markdown(usage: Usage, rows: list[RepoUsage], root: str) -> str:
    cols = [c for c in REPO_FIELDS if c not in ("blobs", "newest_created")]
    head = ["repository", *cols[1:]]
    right = {c for c in cols if c != "name" and c != "latest_push"}
    out = [f"# Registry storage report: `{root}`", "", f"Scope: `{usage.scope}`", ""]
    out.append("| " + " | ".join(head) + " |")
    out.append("|" + "|".join("---:" if c in right else "---" for c in cols) + "|")
    for row in rows:  # the dataclasses, not the frame: pandas turns a missing time into NaN
        out.append("| " + " | ".join(_md_escape(getattr(row, c)) for c in cols) + " |")
    out += ["", "| summary | value |", "|---|---:|"]
    for key, value in vars(usage.summary).items():
        out.append(f"| {key} | {_md_escape(value)} |")
    return "\n".join(out) + "\n"
