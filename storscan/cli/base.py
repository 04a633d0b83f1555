"""What every command shares: the app, its options, locating the root, output, exit codes.

Exit codes (every command): 0 done, 1 findings at or above --fail-on (or a partial failure),
2 usage error or unreadable root, 3 cancelled by the user, 4 refused as unsafe. They are
mapped in one place, the app's group, so every way of running it sees the same codes.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, NoReturn

import typer
from typer.core import TyperGroup

from storscan.cli.console import printable
from storscan.collector import collector_paused
from storscan.errors import (
    EXIT_CANCELLED,
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


COMMAND_ORDER = (
    "report",
    "audit",
    "scan",
    "graph",
    "prune",
    "gc",
    "restore",
    "trash",
    "break-lock",
)


class StorscanGroup(TyperGroup):
    """Turns storscan's errors and the commands' integer results into exit codes."""

    def list_commands(self, ctx: Any) -> list[str]:
        # Read-only commands first, then those that change the tree, as the README does.
        names = super().list_commands(ctx)
        return sorted(names, key=lambda n: COMMAND_ORDER.index(n) if n in COMMAND_ORDER else 99)

    def invoke(self, ctx: Any) -> Any:
        try:
            result = super().invoke(ctx)
        except StorscanError as exc:
            log.debug("error", exc_info=True)
            print(f"storscan: error: {printable(str(exc))}", file=sys.stderr)
            raise typer.Exit(exc.exit_code) from exc
        except KeyboardInterrupt as exc:
            print("storscan: interrupted", file=sys.stderr)
            raise typer.Exit(EXIT_CANCELLED) from exc
        if isinstance(result, int) and result:
            raise typer.Exit(result)
        return result


app = typer.Typer(
    cls=StorscanGroup,
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
    typer.Option(
        "--jobs",
        "-j",
        min=1,
        help="Parallel walker processes, up to 61 (default: four per core, at most 32).",
    ),
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


def setup_logging(verbose: int) -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(
        level=level, format="storscan: %(levelname)s: %(message)s", stream=sys.stderr, force=True
    )


def jobs_for(jobs: int | None) -> int:
    """Walker processes: --jobs, else four per core, at most 32.

    Measured on 1.25 million files on two cores: on a warm page cache four and eight walkers
    took the same time; on a cold one, where the walkers mostly wait for the disk, eight
    were 4 to 11% faster than four. The cap keeps a big machine from forking hundreds.
    """
    return jobs or min(32, 4 * (os.cpu_count() or 1))


def progress() -> Callable[[str], None] | None:
    if not sys.stderr.isatty():
        return None

    def show(message: str) -> None:
        sys.stderr.write(f"\rstorscan: {message}\x1b[K")
        sys.stderr.flush()

    return show


def clear_progress() -> None:
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
    text = printable(text)
    if output is None:
        if sys.stdout is None:
            raise UsageError("stdout is closed; give --output FILE")
        try:
            sys.stdout.write(text)
            sys.stdout.flush()
        except OSError as exc:
            raise UsageError(f"cannot write the report to stdout ({exc.strerror})") from exc
        return
    target = output / default_name if output.is_dir() else output
    try:
        target.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"{target}: cannot write the report ({exc.strerror})") from exc
    log.info("report written to %s", target)


def scan_root(
    root: Path | None,
    config: Path | None,
    jobs: int | None,
    deep: bool = False,
    complete: bool = True,
) -> Inventory:
    from storscan.scan import scan

    located = locate(root, config)
    inv = scan(located, jobs=jobs_for(jobs), deep=deep, complete=complete, progress=progress())
    clear_progress()
    return inv


def warn_scan_findings(inv: Inventory) -> None:
    from storscan.findings import ERROR, at_least

    errors = at_least(inv.findings, ERROR)
    if errors:
        log.warning(
            "the walk met %d problem(s), e.g. %s; run storscan audit for the list",
            len(errors),
            errors[0].message,
        )


GlobsOpt = list[str] | None
YesOpt = Annotated[
    bool, typer.Option("--yes", "-y", help="Do not ask for confirmation (for automation).")
]
GraceOpt = Annotated[
    str,
    typer.Option(
        help="Refuse to sweep while an upload started, or an unreferenced blob was written, "
        "this recently: the registry is then taking pushes."
    ),
]


def main() -> NoReturn:
    """Entry point of the console script: one place maps errors to exit codes."""
    # The whole run, not only the walk: the report's figures read the same millions of
    # objects, and re-enabling the collector after the walk would traverse them all.
    with collector_paused():
        _run()


def _run() -> NoReturn:
    try:
        with _CLEANUP:
            result = app(standalone_mode=False)
    except StorscanError as exc:
        logging.getLogger("storscan").debug("error", exc_info=True)
        print(f"storscan: error: {printable(str(exc))}", file=sys.stderr)
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
