"""Findings: what the walk and the audit report, each with a severity and a next step."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

ERROR = "error"
WARNING = "warning"
INFO = "info"
SEVERITY_RANK = {INFO: 0, WARNING: 1, ERROR: 2}

# Every code storscan can emit, with its severity. The README's audit table mirrors this.
CODES: dict[str, str] = {
    # Link files the registry cannot parse: its GC aborts on each of them.
    "link_empty": ERROR,
    "link_malformed": ERROR,
    "link_trailing_newline": ERROR,
    "link_mismatch": ERROR,
    "link_not_regular": ERROR,
    # Images that cannot be pulled.
    "tag_manifest_missing": ERROR,
    "tag_revision_missing": ERROR,
    "revision_manifest_missing": ERROR,
    "blob_missing": ERROR,
    "manifest_unparsable": ERROR,
    "manifest_digest_mismatch": ERROR,
    "descriptor_size_mismatch": ERROR,
    "blob_digest_mismatch": ERROR,
    "unreadable": ERROR,
    # Hazards of the registry's own garbage-collect.
    "gc28_untagged_child": ERROR,
    "gc28_repo_skipped": ERROR,
    "gc3_schema1_abort": ERROR,
    "gc3_no_layers_abort": ERROR,
    "gc_no_repositories_abort": ERROR,
    "gc_no_blobs_abort": ERROR,
    "gc_repo_name_abort": ERROR,
    "gc_blob_path_abort": ERROR,
    # Needs action, nothing broken yet.
    "upload_stale": WARNING,
    "upload_no_startedat": WARNING,
    "layer_link_dangling": WARNING,
    "repository_empty": WARNING,
    "tag_without_current": WARNING,
    "symlink_skipped": WARNING,
    "unexpected_entry": WARNING,
    # Normal states worth knowing, with their bytes.
    "blob_unreferenced": INFO,
    "manifest_untagged": INFO,
    "layer_link_alias": INFO,
    "revision_dir_empty": INFO,
    "blob_dir_empty": INFO,
    "temp_file": INFO,
    "scheduler_state": INFO,
    "upload": INFO,
}


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem or notable state in the tree."""

    code: str
    message: str
    repository: str | None = None
    tag: str | None = None
    digest: str | None = None
    path: str | None = None
    bytes: int | None = None

    @property
    def severity(self) -> str:
        return CODES[self.code]

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["severity"] = self.severity
        return {
            k: data[k]
            for k in ("code", "severity", "repository", "tag", "digest", "path", "bytes", "message")
        }


def at_least(findings: list[Finding], threshold: str) -> list[Finding]:
    """Findings whose severity is ``threshold`` or worse."""
    rank = SEVERITY_RANK[threshold]
    return [f for f in findings if SEVERITY_RANK[f.severity] >= rank]
