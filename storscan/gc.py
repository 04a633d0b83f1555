"""Garbage collection: storscan's own mark and sweep, or the registry's GC checked against it.

Mark: the ``all`` sets of every repository (with ``--delete-untagged``, after the untagged
revisions are removed as ``prune --untagged`` would). Sweep, in this order: blob directories
``blobs/<alg>/<2hex>/<hex>/``, then the ``_layers`` links left dangling, then empty two-hex
prefix directories. Only the sweep is irreversible, so every check runs before it: the
audit's errors that make the mark uncertain, and signs that the registry is taking pushes.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from storscan import layout as L
from storscan.apply import StopFn, never
from storscan.errors import CancelledError, FailedError, RefusedError, UsageError
from storscan.plan import REVISION, Plan, blobs_after, build_plan
from storscan.reach import Reach, short
from storscan.root import Root
from storscan.scan import Inventory
from storscan.select import Selection, age_text

DEFAULT_GRACE = timedelta(hours=1)
# Findings after which storscan's mark cannot be trusted: what a link or manifest names is
# unknown, so a blob something needs could look unreferenced.
UNCERTAIN_MARK = frozenset(
    {
        "link_empty",
        "link_malformed",
        "link_trailing_newline",
        "link_mismatch",
        "link_not_regular",
        "manifest_unparsable",
        "manifest_digest_mismatch",
        "unreadable",
    }
)
STOP_THE_REGISTRY = (
    "the registry must be stopped or read-only (storage.maintenance.readonly) while "
    "garbage is collected: a push racing the sweep loses its blobs"
)
RESTART_THE_REGISTRY = (
    "restart the registry now: its blob descriptor cache still lists the deleted blobs"
)


@dataclass(frozen=True)
class SweepPlan:
    """What a sweep deletes: eligible blobs, then dangling layer-link directories."""

    blobs: tuple[tuple[str, int], ...]
    layer_links: tuple[str, ...]  # `<alg>/<hex>` directories under _layers, relative to v2
    untagged: Plan | None = None

    @property
    def bytes(self) -> int:
        return sum(size for _, size in self.blobs)


def plan_sweep(
    inv: Inventory, *, delete_untagged: bool, now: datetime, reach: Reach | None = None
) -> SweepPlan:
    """Decide the sweep. Pure, like prune's planning."""
    reach = reach or Reach(inv)
    untagged = None
    gone: dict[str, set[str]] = {}
    if delete_untagged:
        sel = Selection(repos=("**",), untagged=True, now=now)
        untagged = build_plan(inv, sel, reach)
        for a in untagged.actions:
            if a.kind == REVISION and a.digest:
                gone.setdefault(a.repository, set()).add(a.digest)
    live = blobs_after(inv, reach, set(), gone)
    eligible = tuple(sorted((d, b.size) for d, b in inv.blobs.items() if d not in live))
    remaining = set(inv.blobs) - {d for d, _ in eligible}
    links = []
    for repo in inv.repos.values():
        targets = {d: d for d in repo.layer_links} | repo.alias_links
        for link, target in sorted(targets.items()):
            if target not in remaining:
                alg, hexpart = L.split_digest(link)
                links.append(f"{L.REPOSITORIES}/{repo.name}/{L.LAYERS}/{alg}/{hexpart}")
    return SweepPlan(eligible, tuple(links), untagged)


def check_safe(
    inv: Inventory, sweep: SweepPlan, *, now: datetime, grace: timedelta, force: bool
) -> None:
    """Refuse (exit 4) while the mark is uncertain or the registry seems to take pushes."""
    uncertain = [f for f in inv.findings if f.code in UNCERTAIN_MARK]
    if uncertain and not force:
        raise RefusedError(
            f"{len(uncertain)} problem(s) make the mark uncertain, e.g. {uncertain[0].message}; "
            "fix them first (storscan audit lists them) or pass --force"
        )
    for repo in inv.repos.values():
        for tag, digest in sorted(repo.valid_tags.items()):
            # No revision link: the mark does not reach it, yet a tag still names it.
            if digest in inv.blobs and digest not in repo.revisions and not force:
                raise RefusedError(
                    f"{repo.name}:{tag} names {short(digest)}, which has no revision link, so "
                    "collecting garbage would delete it: push the image again or remove the tag "
                    f"(storscan prune --repo {repo.name} --tag {tag}), or pass --force"
                )
        for up in repo.uploads:
            started = up.started or datetime.fromtimestamp(up.mtime, UTC)
            if now - started < grace:
                raise RefusedError(
                    f"upload {up.id} to {repo.name} started at {started:%Y-%m-%dT%H:%M:%SZ}, "
                    f"within the {age_text(grace)} grace period: the registry is taking pushes; "
                    "stop it or make it read-only, wait, or pass a shorter --grace"
                )
    for digest, _ in sweep.blobs:
        written = datetime.fromtimestamp(inv.blobs[digest].mtime, UTC)
        if now - written < grace:
            raise RefusedError(
                f"unreferenced blob {short(digest)} was written at {written:%Y-%m-%dT%H:%M:%SZ}, "
                f"within the {age_text(grace)} grace period: a push may still be on its way; "
                "stop the registry or make it read-only, wait, or pass a shorter --grace"
            )


@dataclass
class SweepResult:
    """What a sweep did, blob by blob."""

    deleted: list[tuple[str, int]] = field(default_factory=list)
    already_gone: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    links_removed: int = 0
    prefixes_removed: int = 0


def sweep(root: Root, plan: SweepPlan, *, stop: StopFn = never) -> SweepResult:
    """Delete the eligible blob directories, dangling links and empty prefixes."""
    result = SweepResult()
    for digest, size in plan.blobs:
        if stop():
            raise CancelledError(
                f"interrupted after deleting {len(result.deleted)} blobs; the tree is "
                "consistent: run storscan gc again to finish"
            )
        try:
            shutil.rmtree(root.v2 / L.blob_dir(digest))
            result.deleted.append((digest, size))
        except FileNotFoundError:
            result.already_gone.append(digest)
        except OSError as exc:
            result.failed.append((digest, exc.strerror or str(exc)))
    for rel in plan.layer_links:
        link_dir = root.v2 / rel
        try:
            (link_dir / "link").unlink()
            link_dir.rmdir()
            result.links_removed += 1
        except OSError:
            continue  # gone already, or something else lives there: leave it
    result.prefixes_removed = _remove_empty_prefixes(root.v2 / L.BLOBS)
    return result


def _remove_empty_prefixes(blobs: Path) -> int:
    removed = 0
    for alg in sorted(p for p in blobs.iterdir() if p.is_dir() and not p.is_symlink()):
        for prefix in sorted(alg.iterdir()):
            if len(prefix.name) == 2 and prefix.is_dir() and not any(prefix.iterdir()):
                prefix.rmdir()
                removed += 1
    return removed


# -- the registry's own GC ------------------------------------------------------------------

_ELIGIBLE_BLOB = re.compile(r"^blob eligible for deletion: (sha\d+:[0-9a-f]+)\s*$")
_ELIGIBLE_MANIFEST = re.compile(r"^manifest eligible for deletion: \{?(?:\S+ )?(sha\d+:[0-9a-f]+)")


@dataclass(frozen=True)
class RegistryGC:
    """One run of the registry's garbage-collect, its output parsed."""

    argv: tuple[str, ...]
    returncode: int
    eligible_blobs: frozenset[str]
    eligible_manifests: frozenset[str]
    stderr: str


def run_registry_gc(argv: list[str], *, dry_run: bool, delete_untagged: bool) -> RegistryGC:
    """Run the registry's GC command; a failure of its dry run refuses, of the real run fails."""
    cmd = [*argv, *(["--dry-run"] if dry_run else []), *(["--delete-untagged"] * delete_untagged)]
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL
        )
    except OSError as exc:
        raise UsageError(
            f"--registry-cmd: cannot run {argv[0]!r} ({exc.strerror}); give the command that "
            "runs the registry's garbage-collect with its config"
        ) from exc
    out = proc.stdout + proc.stderr
    # The registry exits 0 on an unknown flag: look for cobra's message too.
    if proc.returncode != 0 or "Error: unknown flag" in out or "Usage:" in proc.stdout:
        last = (proc.stderr.strip().splitlines() or proc.stdout.strip().splitlines() or [""])[-1]
        error = RefusedError if dry_run else FailedError
        raise error(
            f"the registry's GC ({' '.join(cmd)}) failed with exit {proc.returncode}: {last}; "
            "check the command and its config"
        )
    blobs = frozenset(
        m.group(1) for line in proc.stdout.splitlines() if (m := _ELIGIBLE_BLOB.match(line))
    )
    manifests = frozenset(
        m.group(1) for line in proc.stdout.splitlines() if (m := _ELIGIBLE_MANIFEST.match(line))
    )
    return RegistryGC(tuple(cmd), proc.returncode, blobs, manifests, proc.stderr)


def breaking_images(
    inv: Inventory, plan: SweepPlan, deleted: frozenset[str], reach: Reach | None = None
) -> list[str]:
    """Images storscan keeps whose blobs ``deleted`` would remove (repo:tag or repo@digest)."""
    reach = reach or Reach(inv)
    gone: dict[str, set[str]] = {}
    if plan.untagged is not None:
        for a in plan.untagged.actions:
            if a.kind == REVISION and a.digest:
                gone.setdefault(a.repository, set()).add(a.digest)
    images = []
    for repo in inv.repos.values():
        covered: set[str] = set()
        for tag, digest in sorted(repo.valid_tags.items()):
            if reach.blobs_of(digest) & deleted:
                images.append(f"{repo.name}:{tag}")
                covered |= reach.manifests_of(digest)
        for digest in sorted(repo.revisions):
            dropped = digest in gone.get(repo.name, set())
            if not dropped and digest not in covered and reach.blobs_of(digest) & deleted:
                images.append(f"{repo.name}@{digest}")
    return images


def compare_with_registry(inv: Inventory, plan: SweepPlan, verdict: RegistryGC) -> None:
    """Refuse when the registry would delete a blob storscan holds reachable."""
    keep = set(inv.blobs) - {d for d, _ in plan.blobs}
    danger = frozenset(verdict.eligible_blobs & keep)
    if not danger:
        return
    images = breaking_images(inv, plan, danger)
    shown = ", ".join(images[:8]) + (f" and {len(images) - 8} more" if len(images) > 8 else "")
    raise RefusedError(
        f"the registry's GC would delete {len(danger)} blob(s) storscan holds reachable, "
        f"breaking {shown or 'images'}; nothing was run: use storscan's own gc "
        "(drop --registry-cmd)"
    )
