"""The commands that change the tree: prune, gc, restore, trash and break-lock.

Each is a dry run unless --apply; each takes the storage root's lock before it changes
anything, and asks for a typed confirmation (or --yes) before acting.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer

from storscan.cli.base import (
    ConfigOpt,
    GlobsOpt,
    GraceOpt,
    JobsOpt,
    NowOpt,
    RootArg,
    VerboseOpt,
    YesOpt,
    app,
    clear_progress,
    jobs_for,
    locate,
    progress,
    setup_logging,
    write_output,
)
from storscan.cli.console import confirm, lock_for, say, sizes
from storscan.errors import EXIT_FINDINGS, UsageError

log = logging.getLogger("storscan")

if TYPE_CHECKING:
    from storscan.root import Root
    from storscan.scan import Inventory


@app.command()
def prune(
    root: RootArg = None,
    config: ConfigOpt = None,
    repo: Annotated[
        GlobsOpt, typer.Option("--repo", help="Repositories to work in (glob; ** crosses /).")
    ] = None,
    tag: Annotated[GlobsOpt, typer.Option("--tag", help="Candidate tags (glob).")] = None,
    keep_tag: Annotated[
        GlobsOpt, typer.Option("--keep-tag", help="Tags never removed (glob); always wins.")
    ] = None,
    older_than: Annotated[
        str | None, typer.Option(help="Keep candidates pushed more recently than this (30d).")
    ] = None,
    keep_last: Annotated[
        int | None, typer.Option(min=0, help="Keep the N newest candidates per repository.")
    ] = None,
    untagged: Annotated[
        bool, typer.Option("--untagged", help="Remove revisions no tag reaches.")
    ] = False,
    manifest: Annotated[
        GlobsOpt, typer.Option("--manifest", help="Remove this manifest and its tags (digest).")
    ] = None,
    delete_repo: Annotated[
        bool, typer.Option("--delete-repo", help="Remove the --repo repositories entirely.")
    ] = False,
    uploads_older_than: Annotated[
        str | None, typer.Option(help="Remove upload directories older than this.")
    ] = None,
    fmt: Annotated[
        Literal["table", "json"], typer.Option("--format", "-f", help="Output format.")
    ] = "table",
    plan_out: Annotated[Path | None, typer.Option(help="Save the plan (JSON) here.")] = None,
    apply: Annotated[bool, typer.Option("--apply", help="Move the plan into quarantine.")] = False,
    apply_plan: Annotated[
        Path | None, typer.Option(help="Apply a plan saved with --plan-out, if nothing changed.")
    ] = None,
    yes: YesOpt = False,
    gc: Annotated[bool, typer.Option("--gc", help="Then collect garbage (storscan gc).")] = False,
    grace: GraceOpt = "1h",
    jobs: JobsOpt = None,
    now: NowOpt = None,
    verbose: VerboseOpt = 0,
) -> int:
    """Remove tags, manifests, repositories and stale uploads: a dry run unless --apply.

    Removed directories go to a quarantine under the storage root (storscan restore undoes
    it); blobs are only deleted by gc. Exit 4 when refused as unsafe.
    """
    setup_logging(verbose)
    from storscan.apply import apply_plan as execute
    from storscan.apply import check_plan, interruptible, new_run_id
    from storscan.plan import build_plan, plan_from_json, plan_to_json, render_plan
    from storscan.scan import scan
    from storscan.select import build_selection, matches, parse_age
    from storscan.timeutil import parse_now

    reference = parse_now(now)
    grace_age = parse_age(grace, "--grace")
    selecting = any([repo, tag, keep_tag, older_than, keep_last is not None, untagged])
    selecting = selecting or any([manifest, delete_repo, uploads_older_than])
    saved = None
    if apply_plan is not None:
        if selecting:
            raise UsageError("--apply-plan executes a saved plan; drop the selection options")
        try:
            saved = plan_from_json(apply_plan.read_text(encoding="utf-8"), str(apply_plan))
        except OSError as exc:
            raise UsageError(f"{apply_plan}: cannot read the plan ({exc.strerror})") from exc
    sel = None
    if saved is None:
        sel = build_selection(
            repos=repo or (),
            tags=tag or (),
            keep_tags=keep_tag or (),
            older_than=older_than,
            keep_last=keep_last,
            untagged=untagged,
            manifests=manifest or (),
            delete_repo=delete_repo,
            uploads_older_than=uploads_older_than,
            now=reference,
        )
    acting = apply or saved is not None
    located = locate(root, config, archive_ok=False)
    with lock_for(located, acting, "prune"):
        inv = scan(located, jobs=jobs_for(jobs), deep=gc, progress=progress())
        clear_progress()
        if saved is not None:
            check_plan(saved, inv)
            plan = saved
        else:
            assert sel is not None
            plan = build_plan(inv, sel)
            for glob in sel.repos:
                if not any(sel.chosen(name) and matches(name, [glob]) for name in inv.repos):
                    log.warning("--repo %s matches no repository under %s", glob, located.name)
        write_output(render_plan(plan, fmt), None, "")
        if plan_out is not None:
            write_output(plan_to_json(plan), plan_out, "plan.json")
        if not acting:
            say(
                f"dry run, nothing changed: with --apply, garbage collection then frees "
                f"{sizes(plan.bytes_to_free)}"
            )
            return 0
        if not plan.actions:
            say("nothing to remove")
            if not gc:
                return 0
        else:
            from storscan.plan import KIND_ORDER

            counts = ", ".join(f"{plan.count(k)} {k}" for k in KIND_ORDER)
            lines = [
                "storscan prune: about to move into quarantine",
                f"root      {located.storage_root}",
                f"removes   {counts}",
                f"then GC   frees {sizes(plan.bytes_to_free)}",
            ]
            if gc:
                lines.append("then      garbage collection deletes those blobs (irreversible)")
            confirm(lines, yes)
            run_id = new_run_id()
            with interruptible() as stop:
                result = execute(located, plan, run_id=run_id, stop=stop)
            say(
                f"moved {len(result.moved)} items into quarantine {run_id}; undo with: "
                f"storscan restore {located.storage_root} {run_id}"
            )
            if result.missing:
                say(f"{len(result.missing)} items were already gone, e.g. {result.missing[0].path}")
        after = scan(located, jobs=jobs_for(jobs), deep=gc)
        if not gc:
            from storscan.plan import blobs_after
            from storscan.reach import Reach

            live = blobs_after(after, Reach(after), set(), {})
            unref = sum(b.size for d, b in after.blobs.items() if d not in live)
            say(
                f"measured again: {sizes(unref)} now unreferenced (planned "
                f"{plan.bytes_to_free} bytes); storscan gc {located.storage_root} --apply frees it"
            )
            return 0
        return _collect(
            located, after, False, True, True, grace_age, False, reference, None, fmt, jobs
        )


@app.command("gc")
def gc_cmd(
    root: RootArg = None,
    config: ConfigOpt = None,
    delete_untagged: Annotated[
        bool,
        typer.Option(
            "--delete-untagged", help="First remove untagged revisions (as prune --untagged)."
        ),
    ] = False,
    apply: Annotated[bool, typer.Option("--apply", help="Delete for real (irreversible).")] = False,
    yes: YesOpt = False,
    grace: GraceOpt = "1h",
    registry_cmd: Annotated[
        str | None,
        typer.Option(
            help="Delegate the sweep to the registry's GC command (e.g. 'docker-registry "
            "garbage-collect /etc/docker/registry/config.yml'), after checking its dry run."
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Sweep even though the audit found a bad link.")
    ] = False,
    fmt: Annotated[
        Literal["table", "json"], typer.Option("--format", "-f", help="Output format.")
    ] = "table",
    jobs: JobsOpt = None,
    now: NowOpt = None,
    verbose: VerboseOpt = 0,
) -> int:
    """Collect garbage: delete blobs no manifest references (a dry run unless --apply).

    The registry must be stopped or read-only meanwhile, and restarted afterwards. Exit 4
    when refused as unsafe, 1 when some blob could not be deleted.
    """
    setup_logging(verbose)
    import shlex

    from storscan.scan import scan
    from storscan.select import parse_age
    from storscan.timeutil import parse_now

    reference = parse_now(now)
    grace_age = parse_age(grace, "--grace")
    argv = None
    if registry_cmd is not None:
        try:
            argv = shlex.split(registry_cmd)
        except ValueError as exc:
            raise UsageError(f"--registry-cmd {registry_cmd!r}: {exc}") from exc
        if not argv:
            raise UsageError("--registry-cmd is empty; give the registry's GC command")
    located = locate(root, config, archive_ok=False)
    with lock_for(located, apply, "gc"):
        inv = scan(located, jobs=jobs_for(jobs), deep=True, progress=progress())
        clear_progress()
        return _collect(
            located, inv, delete_untagged, apply, yes, grace_age, force, reference, argv, fmt, jobs
        )


def _collect(
    located: Root,
    inv: Inventory,
    delete_untagged: bool,
    apply: bool,
    yes: bool,
    grace: timedelta,
    force: bool,
    now: datetime,
    argv: list[str] | None,
    fmt: str,
    jobs: int | None,
) -> int:
    """The gc workflow after the walk: decide, check, show, confirm, sweep, measure."""
    import json

    from storscan.apply import apply_plan, interruptible, new_run_id
    from storscan.gc import (
        RESTART_THE_REGISTRY,
        STOP_THE_REGISTRY,
        SweepPlan,
        check_safe,
        compare_with_registry,
        plan_sweep,
        run_registry_gc,
        sweep,
    )
    from storscan.plan import render_plan
    from storscan.scan import scan

    plan = plan_sweep(inv, delete_untagged=delete_untagged, now=now)
    say(STOP_THE_REGISTRY)
    if fmt == "json":
        data = {
            "schema_version": 1,
            "root": str(located.storage_root),
            "delete_untagged": delete_untagged,
            "untagged": plan.untagged.as_dict() if plan.untagged else None,
            "blobs": [{"digest": d, "size": s} for d, s in plan.blobs],
            "bytes": plan.bytes,
            "layer_links": list(plan.layer_links),
        }
        write_output(json.dumps(data, indent=2) + "\n", None, "")
    else:
        out = render_plan(plan.untagged, "table") + "\n" if plan.untagged else ""
        out += "".join(f"{d}  {s}\n" for d, s in plan.blobs)
        out += f"eligible  {len(plan.blobs)} blobs, {sizes(plan.bytes)}; "
        out += f"{len(plan.layer_links)} dangling layer links\n"
        write_output(out, None, "")
    # After the listing, so that a refused dry run still shows what it would delete.
    check_safe(inv, plan, now=now, grace=grace, force=force)
    if argv is not None:
        verdict = run_registry_gc(argv, dry_run=True, delete_untagged=delete_untagged)
        compare_with_registry(inv, plan, verdict)
        say(f"the registry's dry run agrees: it deletes {len(verdict.eligible_blobs)} blobs")
    if not apply:
        say(f"dry run, nothing changed: --apply frees {sizes(plan.bytes)}")
        return 0
    lines = [
        "storscan gc: about to delete blobs (irreversible)",
        f"root      {located.storage_root}",
        f"deletes   {len(plan.blobs)} blobs, {sizes(plan.bytes)}",
        f"by        {' '.join(argv) if argv else 'storscan built-in sweep'}",
    ]
    if plan.untagged is not None and plan.untagged.actions:
        lines.insert(2, f"first     {len(plan.untagged.actions)} untagged items to quarantine")
    confirm(lines, yes)
    with interruptible() as stop:
        if argv is not None:
            run_registry_gc(argv, dry_run=False, delete_untagged=delete_untagged)
            # The registry leaves the layer links of what it swept; remove those it left
            # dangling (only links whose blob is really gone now).
            after = scan(located, jobs=jobs_for(jobs))
            links = tuple(
                rel
                for rel in plan.layer_links
                if rel.split("/")[-2] == "sha256" and _link_target(rel) not in after.blobs
            )
            sweep(located, SweepPlan((), links), stop=stop)  # links only: the blobs stay as seen
            failed: list[tuple[str, str]] = []
        else:
            if plan.untagged is not None and plan.untagged.actions:
                run_id = new_run_id()
                apply_plan(located, plan.untagged, run_id=run_id, stop=stop)
                say(f"untagged revisions moved into quarantine {run_id}")
                inv_now = scan(located, jobs=jobs_for(jobs), deep=True)
                plan = plan_sweep(inv_now, delete_untagged=False, now=now)
            result = sweep(located, plan, stop=stop)
            failed = result.failed
            if result.already_gone:
                say(f"{len(result.already_gone)} blobs were already gone")
            after = scan(located, jobs=jobs_for(jobs))
    freed = [(d, b.size) for d, b in inv.blobs.items() if d not in after.blobs]
    say(f"freed {len(freed)} blobs, {sizes(sum(s for _, s in freed))} (measured by rescanning)")
    say(RESTART_THE_REGISTRY)
    for digest, why in failed:
        say(f"could not delete blob {digest}: {why}")
    if failed:
        from storscan.errors import FailedError

        raise FailedError(f"{len(failed)} blobs could not be deleted; fix their permissions")
    return 0


@app.command("restore")
def restore_cmd(
    root: Annotated[Path, typer.Argument(help="Storage root.", show_default=False)],
    run_id: Annotated[str, typer.Argument(help="Quarantine to restore (see storscan trash).")],
    jobs: JobsOpt = None,
    verbose: VerboseOpt = 0,
) -> int:
    """Put back what a prune moved into quarantine (refuses to overwrite anything)."""
    setup_logging(verbose)
    from storscan.apply import interruptible, missing_blobs, read_journal, restore
    from storscan.scan import scan

    located = locate(root, None, archive_ok=False)
    read_journal(located, run_id)  # an unknown run id is a usage error, before the lock
    with lock_for(located, True, "restore"), interruptible() as stop:
        result = restore(located, run_id, stop=stop)
        say(f"restored {len(result.restored)} items from quarantine {run_id}")
        after = scan(located, jobs=jobs_for(jobs))
        repos = {str(r["repository"]) for r in result.restored}
        gone = missing_blobs(after, repos)
        for digest, images in sorted(gone.items()):
            say(
                f"blob {digest} is already gone (swept by gc): {', '.join(images[:3])} cannot "
                "be pulled; push it again"
            )
    # Restored, but not whole: some images cannot be pulled (exit 1, a partial failure).
    return EXIT_FINDINGS if gone else 0


@app.command("trash")
def trash_cmd(
    root: RootArg = None,
    config: ConfigOpt = None,
    purge_older_than: Annotated[
        str | None, typer.Option(help="Select quarantines older than this for purging.")
    ] = None,
    apply: Annotated[
        bool, typer.Option("--apply", help="Purge them for real (irreversible).")
    ] = False,
    yes: YesOpt = False,
    now: NowOpt = None,
    verbose: VerboseOpt = 0,
) -> int:
    """List quarantines (run id, time, items, bytes); purge old ones with --apply."""
    setup_logging(verbose)
    from storscan.apply import interruptible, list_quarantines, purge
    from storscan.select import parse_age
    from storscan.timeutil import parse_now

    reference = parse_now(now)
    age = parse_age(purge_older_than, "--purge-older-than") if purge_older_than else None
    if apply and age is None:
        raise UsageError("--apply purges what --purge-older-than selects; give it (e.g. 7d)")
    located = locate(root, config, archive_ok=False)
    with lock_for(located, apply, "trash"):
        runs = list_quarantines(located)
        old = [q for q in runs if age is not None and (q.time is None or reference - q.time > age)]
        lines = ["RUN ID                    TIME                  ITEMS  BYTES  PURGE"]
        for q in runs:
            when = q.time.strftime("%Y-%m-%dT%H:%M:%SZ") if q.time else "?"
            mark = "yes" if q in old else ""
            lines.append(f"{q.run_id:<24}  {when:<20}  {q.items:>5}  {q.bytes:>5}  {mark}")
        write_output("\n".join(lines if runs else ["no quarantines"]) + "\n", None, "")
        total = sum(q.bytes for q in old)
        if not apply:
            if old:
                say(f"dry run: --apply purges {len(old)} quarantines, {sizes(total)}")
            return 0
        if not old:
            say("nothing to purge")
            return 0
        confirm(
            [
                "storscan trash: about to purge quarantines (irreversible)",
                f"root      {located.storage_root}",
                f"purges    {len(old)} runs, {sizes(total)}",
            ],
            yes,
        )
        with interruptible() as stop:
            done = purge(old, stop=stop)
        say(f"purged {len(done)} quarantines, {sizes(sum(q.bytes for q in done))}")
    return 0


@app.command("break-lock")
def break_lock_cmd(
    root: RootArg = None,
    config: ConfigOpt = None,
    force: Annotated[
        bool, typer.Option("--force", help="Break it even if its process runs here.")
    ] = False,
    verbose: VerboseOpt = 0,
) -> int:
    """Remove the lock a dead storscan run left behind."""
    setup_logging(verbose)
    from storscan.lock import break_lock

    located = locate(root, config, archive_ok=False)
    holder = break_lock(located.storage_root, force=force)
    say(f"removed the lock of {holder.describe()}" if holder else "the storage root is not locked")
    return 0


def _link_target(rel: str) -> str:
    """``repositories/<name>/_layers/<alg>/<hex>`` -> ``<alg>:<hex>``."""
    parts = rel.split("/")
    return f"{parts[-2]}:{parts[-1]}"
