"""The read-only commands: report, audit, scan and graph."""

from __future__ import annotations

from typing import Annotated, Literal

import typer

from storscan.cli.base import (
    ConfigOpt,
    JobsOpt,
    NowOpt,
    OutputOpt,
    RootArg,
    ScopeOpt,
    VerboseOpt,
    app,
    jobs_for,
    scan_root,
    setup_logging,
    warn_scan_findings,
    write_output,
)
from storscan.errors import EXIT_FINDINGS


@app.command()
def report(
    root: RootArg = None,
    config: ConfigOpt = None,
    scope: ScopeOpt = "all",
    fmt: Annotated[
        Literal["table", "json", "csv", "markdown"],
        typer.Option("--format", "-f", help="Output format."),
    ] = "table",
    sort: Annotated[
        Literal["total", "exclusive", "shared", "name"],
        typer.Option(help="Order of repositories (largest first; name: alphabetical)."),
    ] = "total",
    top: Annotated[int | None, typer.Option(min=1, help="Only the first N repositories.")] = None,
    output: OutputOpt = None,
    jobs: JobsOpt = None,
    now: NowOpt = None,
    verbose: VerboseOpt = 0,
) -> None:
    """Per-repository total / exclusive / shared bytes and a registry summary."""
    setup_logging(verbose)
    from storscan.report import render
    from storscan.usage import compute

    inv = scan_root(root, config, jobs, complete=False)
    warn_scan_findings(inv)
    usage = compute(inv, scope)
    ext = {"table": "txt", "json": "json", "csv": "csv", "markdown": "md"}[fmt]
    text = render(usage, fmt, inv.root.name, sort, top, inv.root.readonly)
    write_output(text, output, f"report-{scope}.{ext}")


@app.command()
def audit(
    root: RootArg = None,
    config: ConfigOpt = None,
    fmt: Annotated[
        Literal["table", "json"], typer.Option("--format", "-f", help="Output format.")
    ] = "table",
    fail_on: Annotated[
        Literal["error", "warning", "never"],
        typer.Option(help="Exit 1 when a finding is at least this severe."),
    ] = "error",
    verify: Annotated[bool, typer.Option(help="Also hash every blob (reads all data).")] = False,
    upload_age: Annotated[
        str, typer.Option(help="Uploads older than this are stale (as the registry purges).")
    ] = "168h",
    output: OutputOpt = None,
    jobs: JobsOpt = None,
    now: NowOpt = None,
    verbose: VerboseOpt = 0,
) -> int:
    """Pre-GC audit: broken images, bad links, orphans, stale uploads, registry GC hazards."""
    setup_logging(verbose)
    from storscan.audit import audit as run_audit
    from storscan.findings import at_least
    from storscan.report.findings import render_findings
    from storscan.timeutil import parse_duration, parse_now

    age = parse_duration(upload_age, "--upload-age")
    reference = parse_now(now)
    inv = scan_root(root, config, jobs, deep=True)
    result = run_audit(inv, now=reference, upload_age=age, verify=verify, jobs=jobs_for(jobs))
    text = render_findings(result, fmt, inv.root.name)
    write_output(text, output, f"audit.{'json' if fmt == 'json' else 'txt'}")
    if fail_on != "never" and at_least(result.findings, fail_on):
        return EXIT_FINDINGS
    return 0


@app.command("scan")
def scan_cmd(
    root: RootArg = None,
    config: ConfigOpt = None,
    jobs: JobsOpt = None,
    verbose: VerboseOpt = 0,
) -> None:
    """Walk the tree once and print a short summary with how long the walk took."""
    setup_logging(verbose)
    inv = scan_root(root, config, jobs, complete=False)
    tags = sum(len(r.valid_tags) for r in inv.repos.values())
    revisions = sum(len(r.revisions) for r in inv.repos.values())
    lines = [
        f"root          {inv.root.name}",
        f"repositories  {len(inv.repos)}",
        f"tags          {tags}",
        f"revisions     {revisions}",
        f"manifests     {len(inv.manifests)} parsed",
        f"blobs         {len(inv.blobs)} ({sum(b.size for b in inv.blobs.values())} bytes)",
        f"entries       {inv.files_seen} listed",
        f"findings      {len(inv.findings)} from the walk",
        f"walk          {inv.elapsed:.3f} s with {jobs_for(jobs)} jobs",
    ]
    write_output("\n".join(lines) + "\n", None, "")


@app.command("graph")
def graph_cmd(
    root: RootArg = None,
    config: ConfigOpt = None,
    fmt: Annotated[
        Literal["graphml", "json"], typer.Option("--format", "-f", help="Export format.")
    ] = "graphml",
    output: OutputOpt = None,
    jobs: JobsOpt = None,
    verbose: VerboseOpt = 0,
) -> None:
    """Export the graph of repositories, tags, revisions and blobs."""
    setup_logging(verbose)
    from storscan.graph import build, to_graphml, to_json

    inv = scan_root(root, config, jobs)
    rg = build(inv)
    text = to_graphml(rg) if fmt == "graphml" else to_json(rg)
    write_output(text, output, f"graph.{'graphml' if fmt == 'graphml' else 'json'}")
