"""What a prune selects: repository and tag globs, ages, and the checks that run before the walk.

Globs follow the shell within a repository name: ``*`` and ``?`` stay inside one path segment,
``**`` crosses ``/``. Tag names hold no ``/``, so for tags the two are the same.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache

from storscan import layout as L
from storscan.errors import UsageError
from storscan.timeutil import parse_duration


@lru_cache(maxsize=256)
def glob_regex(pattern: str) -> re.Pattern[str]:
    """Compile a glob: ``**`` matches across ``/``, ``*`` and ``?`` within one segment."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")  # `a/**/b` also matches `a/b`
            i += 3
            continue
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        else:
            out.append(re.escape(char))
        i += 1
    return re.compile("".join(out))


def matches(name: str, globs: Iterable[str]) -> bool:
    """True when ``name`` matches any of ``globs``."""
    return any(glob_regex(g).fullmatch(name) is not None for g in globs)


def parse_age(text: str, option: str) -> timedelta:
    """``<int>`` followed by s, m, h, d or w (compound forms such as ``1h30m`` also work)."""
    age = parse_duration(text, option)
    if age <= timedelta(0):
        raise UsageError(f"{option} {text!r} must be longer than zero; write e.g. 30d")
    return age


def age_text(age: timedelta) -> str:
    """The shortest exact spelling of an age: ``30d``, ``2w``, ``90m``."""
    seconds = int(age.total_seconds())
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


@dataclass(frozen=True)
class Selection:
    """Everything a prune was asked to remove; immutable, validated by ``build_selection``."""

    repos: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    keep_tags: tuple[str, ...] = ()
    older_than: timedelta | None = None
    keep_last: int | None = None
    untagged: bool = False
    manifests: tuple[str, ...] = ()
    delete_repo: bool = False
    uploads_older_than: timedelta | None = None
    now: datetime = datetime(1970, 1, 1, tzinfo=UTC)

    @property
    def selects_tags(self) -> bool:
        """Whether tag rules run at all."""
        return bool(self.tags) or self.older_than is not None or self.keep_last is not None

    def chosen(self, repo: str) -> bool:
        """Whether ``repo`` is within ``--repo`` (every repository when none was given)."""
        return not self.repos or matches(repo, self.repos)

    def describe(self) -> str:
        """The selection as flags, for the plan's header."""
        parts = [f"--repo {g}" for g in self.repos] + [f"--tag {g}" for g in self.tags]
        parts += [f"--keep-tag {g}" for g in self.keep_tags]
        if self.older_than is not None:
            parts.append(f"--older-than {age_text(self.older_than)}")
        if self.keep_last is not None:
            parts.append(f"--keep-last {self.keep_last}")
        if self.untagged:
            parts.append("--untagged")
        parts += [f"--manifest {d}" for d in self.manifests]
        if self.delete_repo:
            parts.append("--delete-repo")
        if self.uploads_older_than is not None:
            parts.append(f"--uploads-older-than {age_text(self.uploads_older_than)}")
        return " ".join(parts)


def build_selection(
    *,
    repos: Iterable[str] = (),
    tags: Iterable[str] = (),
    keep_tags: Iterable[str] = (),
    older_than: str | None = None,
    keep_last: int | None = None,
    untagged: bool = False,
    manifests: Iterable[str] = (),
    delete_repo: bool = False,
    uploads_older_than: str | None = None,
    now: datetime,
) -> Selection:
    """Check the flags of a prune (before any walk) and return the Selection."""
    for digest in manifests:
        if L.parse_digest(digest) is None:
            raise UsageError(
                f"--manifest {digest!r} is not a digest; write it as sha256:<64 hex digits>"
            )
    for glob in [*repos, *tags, *keep_tags]:
        if not glob.strip():
            raise UsageError("an empty glob selects nothing; give a name or a pattern")
    if keep_last is not None and keep_last < 0:
        raise UsageError(f"--keep-last {keep_last} must be 0 or more")
    sel = Selection(
        repos=tuple(repos),
        tags=tuple(tags),
        keep_tags=tuple(keep_tags),
        older_than=parse_age(older_than, "--older-than") if older_than else None,
        keep_last=keep_last,
        untagged=untagged,
        manifests=tuple(dict.fromkeys(manifests)),
        delete_repo=delete_repo,
        uploads_older_than=(
            parse_age(uploads_older_than, "--uploads-older-than") if uploads_older_than else None
        ),
        now=now,
    )
    if sel.delete_repo and (sel.selects_tags or sel.untagged or sel.manifests or sel.keep_tags):
        raise UsageError(
            "--delete-repo removes whole repositories; drop the tag and manifest options, "
            "or drop --delete-repo to prune inside them"
        )
    if sel.delete_repo and not sel.repos:
        raise UsageError("--delete-repo needs --repo GLOB naming the repositories to delete")
    if sel.keep_tags and not sel.selects_tags:
        raise UsageError("--keep-tag only protects tags from --tag, --older-than or --keep-last")
    nothing = not (
        sel.selects_tags
        or sel.untagged
        or sel.manifests
        or sel.delete_repo
        or sel.uploads_older_than is not None
    )
    if nothing:
        raise UsageError(
            "nothing selected: give --tag, --older-than, --keep-last, --untagged, --manifest, "
            "--delete-repo or --uploads-older-than"
        )
    return sel
