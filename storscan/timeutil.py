"""Durations and reference times given on the command line."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from storscan.errors import UsageError

_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_PART = re.compile(r"(\d+)([smhdw])")


def parse_duration(text: str, option: str = "duration") -> timedelta:
    """``168h``, ``7d``, ``2w``, ``1h30m``, ``90s`` -> timedelta."""
    cleaned = text.strip()
    pos, seconds = 0, 0
    for match in _PART.finditer(cleaned):
        if match.start() != pos:
            break
        seconds += int(match.group(1)) * _UNIT[match.group(2)]
        pos = match.end()
    if not cleaned or pos != len(cleaned):
        raise UsageError(
            f"{option} {text!r} is not a duration; write e.g. 90s, 30m, 168h, 7d or 2w"
        )
    try:
        return timedelta(seconds=seconds)
    except OverflowError as exc:
        raise UsageError(
            f"{option} {text!r} is too long; write at most a few thousand days"
        ) from exc


def parse_now(text: str | None) -> datetime:
    """The reference time: ``--now`` (ISO 8601, UTC when no zone is given) or the clock."""
    if text is None:
        return datetime.now(UTC)
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise UsageError(
            f"--now {text!r} is not an ISO 8601 time; write e.g. 2026-12-04T12:00:00Z"
        ) from exc
    return value if value.tzinfo else value.replace(tzinfo=UTC)
