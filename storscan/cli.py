"""Command-line interface: thin wrappers over the library, one error handler, one exit-code map.

Exit codes (every command): 0 done, 1 findings at or above --fail-on (or a partial failure),
2 usage error or unreadable root, 3 cancelled by the user, 4 refused as unsafe.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal, NoReturn

import typer

from storscan.errors import (
    EXIT_CANCELLED,
    EXIT_FINDINGS,
    EXIT_USAGE,
    StorscanError,
    UsageError,
)

if TYPE_CHECKING:
    from storscan.root import Root
    from storscan.scan import Inventory

log = logging.getLogger("storscan")
# Temporary extractions of archives given as ROOT live until the command ends.
_CLEANUP = ExitStack()

EPILOG = (
    "Exit codes: 0 done, 1 findings at or above --fail-on (or a partial failure), "
    "2 usage error or unreadable root, 3 cancelled, 4 refused as unsafe."
)

app = typer.Typer(
    name="storscan",
    help="Analyse, audit and prune the storage of a Docker/OCI (distribution v2) registry offline.",
    epilog=EPILOG,
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

RootArg = Annotated[
    Path | None,
    typer.Argument(
        help="Storage root (the directory holding docker/registry/v2) or the v2 directory.",
        show_default=False,
    ),
]
ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", help="Registry config.yml: use its storage.filesystem.rootdirectory."),
]
JobsOpt = Annotated[
    int | None,
    typer.Option("--jobs", "-j", min=1, help="Parallel walkers (default: from the core count)."),
]
NowOpt = Annotated[
    str | None,
    typer.Option(
        "--now", hidden=True, help="Reference time for ages (ISO 8601), for reproducible runs."
    ),
]
VerboseOpt = Annotated[
    int, typer.Option("--verbose", "-v", count=True, help="-v narrates, -vv debugs.")
]
OutputOpt = Annotated[
    Path | None,
    typer.Option("--output", "-o", help="Write the report to this file (or into this directory)."),
]
ScopeOpt = Annotated[
    Literal["all", "tagged"],
    typer.Option(help="all: what every revision keeps; tagged: what tags keep."),
]


def _setup_logging(verbose: int) -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(
        level=level, format="storscan: %(levelname)s: %(message)s", stream=sys.stderr, force=True
    )


def _jobs(jobs: int | None) -> int:
    # Threads mostly wait on the filesystem, so more than the core count pays off.
    return jobs or min(16, 4 * (os.cpu_count() or 1))


def _progress() -> Callable[[str], None] | None:
    if not sys.stderr.isatty():
        return None

    def show(message: str) -> None:
        sys.stderr.write(f"\rstorscan: {message}\x1b[K")
        sys.stderr.flush()

    return show


def _clear_progress() -> None:
    if sys.stderr.isatty():
        sys.stderr.write("\r\x1b[K")


def locate(root: Path | None, config: Path | None, *, archive_ok: bool = True) -> Root:
    """Resolve ROOT or --config into a Root, warning when nothing is stored there."""
    from storscan.root import is_archive, opened, resolve_config, resolve_root

    if root is not None and config is not None:
        raise UsageError("give either ROOT or --config, not both")
    if config is not None:
        located = resolve_config(config)
    elif root is None:
        raise UsageError("missing ROOT: give the storage root or --config config.yml")
    elif is_archive(root):
        if not archive_ok:
            raise UsageError(
                f"{root} is an archive; this command changes the tree: unpack it first"
            )
        located = replace(resolve_root(_CLEANUP.enter_context(opened(root))), label=str(root))
    else:
        located = resolve_root(root)
    if located.readonly is not None:
        log.info("registry config: maintenance.readonly is %s", "on" if located.readonly else "off")
    if located.empty:
        log.warning("nothing is stored at %s: reporting an empty registry", located.name)
    return located


def write_output(text: str, output: Path | None, default_name: str) -> None:
    """The report goes to stdout, or to --output (a file, or a directory to put it in)."""
    if output is None:
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    target = output / default_name if output.is_dir() else output
    try:
        target.write_text(text)
    except OSError as exc:
        raise UsageError(f"{target}: cannot write the report ({exc.strerror})") from exc
    log.warning("report written to %s", target)


def _scan(
    root: Path | None,
    config: Path | None,
    jobs: int | None,
    deep: bool = False,
    complete: bool = True,
) -> Inventory:
    from storscan.scan import scan

    located = locate(root, config)
    inv = scan(located, jobs=_jobs(jobs), deep=deep, complete=complete, progress=_progress())
    _clear_progress()
    return inv


def _warn_scan_findings(inv: Inventory) -> None:
    from storscan.findings import ERROR, at_least

    errors = at_least(inv.findings, ERROR)
    if errors:
        log.warning(
            "the walk met %d problem(s), e.g. %s; run storscan audit for the list",
            len(errors),
            errors[0].message,
        )


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
    _setup_logging(verbose)
    from storscan.report import render
    from storscan.usage import compute

    inv = _scan(root, config, jobs, complete=False)
    _warn_scan_findings(inv)
    usage = compute(inv, scope)
    ext = {"table": "txt", "json": "json", "csv": "csv", "markdown": "md"}[fmt]
    write_output(render(usage, fmt, inv.root.name, sort, top), output, f"report-{scope}.{ext}")


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
    _setup_logging(verbose)
    from storscan.audit import audit as run_audit
    from storscan.findings import at_least
    from storscan.report.findings import render_findings
    from storscan.timeutil import parse_duration, parse_now

    age = parse_duration(upload_age, "--upload-age")
    reference = parse_now(now)
    inv = _scan(root, config, jobs, deep=True)
    result = run_audit(inv, now=reference, upload_age=age, verify=verify, jobs=_jobs(jobs))
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
    _setup_logging(verbose)
    inv = _scan(root, config, jobs, complete=False)
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
        f"walk          {inv.elapsed:.3f} s with {_jobs(jobs)} jobs",
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
    _setup_logging(verbose)
    from storscan.graph import build, to_graphml, to_json

    inv = _scan(root, config, jobs)
    rg = build(inv)
    text = to_graphml(rg) if fmt == "graphml" else to_json(rg)
    write_output(text, output, f"graph.{'graphml' if fmt == 'graphml' else 'json'}")


def main() -> NoReturn:
    """Entry point of the console script: one place maps errors to exit codes."""
    try:
        with _CLEANUP:
            result = app(standalone_mode=False)
    except StorscanError as exc:
        logging.getLogger("storscan").debug("error", exc_info=True)
        print(f"storscan: error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except typer.Abort:
        print("storscan: cancelled", file=sys.stderr)
        sys.exit(EXIT_CANCELLED)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.TyperException as exc:
        # Bad flags and arguments: the parser's own message, and the usage exit code.
        show = getattr(exc, "show", None)
        if show is not None:
            show()
        else:
            print(f"storscan: error: {exc.format_message()}", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    except KeyboardInterrupt:
        print("storscan: interrupted", file=sys.stderr)
        sys.exit(EXIT_CANCELLED)
    sys.exit(result if isinstance(result, int) else 0)
