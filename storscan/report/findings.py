"""Render audit findings: a table for people (worst first), JSON for machines."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from storscan.audit import AuditResult


def render_findings(result: AuditResult, fmt: str, root: str) -> str:
    """The audit in ``fmt`` (``table`` or ``json``)."""
    if fmt == "json":
        return json.dumps(result.as_dict(root), indent=2) + "\n"
    from storscan.report.tables import size

    counts = result.counts()
    out = [f"storscan audit: {root}", ""]
    for f in result.findings:
        extra = f" [{size(f.bytes)}]" if f.bytes else ""
        out.append(f"{f.severity.upper():<7}  {f.code:<26}  {f.message}{extra}")
    if not result.findings:
        out.append("no findings")
    out.append("")
    out.append(f"{counts['error']} errors, {counts['warning']} warnings, {counts['info']} info")
    return "\n".join(out) + "\n"
