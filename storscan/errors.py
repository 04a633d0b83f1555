"""The one error tree of storscan; every class carries the exit code the CLI returns for it."""

from __future__ import annotations

EXIT_OK = 0
EXIT_FINDINGS = 1
EXIT_USAGE = 2
EXIT_CANCELLED = 3
EXIT_REFUSED = 4


class StorscanError(Exception):
    """Base of every error storscan reports to its user."""

    exit_code = EXIT_USAGE


class UsageError(StorscanError):
    """A flag, argument or value the user gave cannot be used."""


class NotARegistryError(StorscanError):
    """The given root is not (or does not contain) registry storage."""


class UnsupportedError(StorscanError):
    """The input is valid but storscan does not handle it yet."""


class CancelledError(StorscanError):
    """The user declined a confirmation or interrupted the run."""

    exit_code = EXIT_CANCELLED


class RefusedError(StorscanError):
    """storscan refused to act because acting would be unsafe."""

    exit_code = EXIT_REFUSED


class FailedError(StorscanError):
    """An operation ran but part of it failed (e.g. a blob could not be removed)."""

    exit_code = EXIT_FINDINGS
