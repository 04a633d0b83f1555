"""Talking to the person at the terminal: messages on stderr, framed summaries, confirmation."""

from __future__ import annotations

import re
import sys
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING

from storscan.errors import CancelledError, RefusedError

if TYPE_CHECKING:
    from storscan.root import Root


# Control characters (but newline and tab) and undecodable bytes of file names.
_UNPRINTABLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    # os.scandir hands undecodable bytes over as surrogates U+DC80..U+DCFF (surrogateescape).
    return f"\\x{code - 0xDC00 if 0xDC80 <= code <= 0xDCFF else code:02x}"


def printable(text: str) -> str:
    """``text`` safe for a terminal: names from the tree can hold escape sequences."""
    return _UNPRINTABLE.sub(_escape, text)


def say(message: str) -> None:
    """A line for the person at the terminal (stderr: stdout carries only the report)."""
    print(f"storscan: {printable(message)}", file=sys.stderr, flush=True)


def _stdin_is_terminal() -> bool:
    return sys.stdin.isatty()


def frame(lines: list[str]) -> str:
    """A box around a summary, so the last look before acting stands out."""
    width = max(len(line) for line in lines)
    bar = "+" + "-" * (width + 2) + "+"
    return "\n".join([bar, *(f"| {line.ljust(width)} |" for line in lines), bar])


def confirm(lines: list[str], yes: bool) -> None:
    """Show the framed summary and ask for ``yes``; ``--yes`` skips the question."""
    print(frame(lines), file=sys.stderr, flush=True)
    if yes:
        return
    if not _stdin_is_terminal():
        raise RefusedError("no terminal to confirm on; pass --yes to act without asking")
    print("Type yes to go on: ", end="", file=sys.stderr, flush=True)
    answer = sys.stdin.readline().strip()
    if answer != "yes":
        raise CancelledError(f"not confirmed (got {answer!r}); nothing was changed")


def lock_for(located: Root, acting: bool, command: str) -> AbstractContextManager[object]:
    """The storage root's lock for a run that changes the tree; nothing for a dry run."""
    from storscan.lock import Lock, check_writable

    if not acting:
        return nullcontext()
    check_writable(located.storage_root, located.v2)
    return Lock(located.storage_root, command)


def sizes(n: int) -> str:
    """Bytes for people with the exact count beside them."""
    from storscan.report.tables import size

    return f"{size(n)} ({n} bytes)"
