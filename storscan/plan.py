"""The pure planning step of prune: an Inventory and a Selection in, an immutable Plan out.

How the plan is decided, per chosen repository:

1. Tag rules pick candidates (``--tag``, else every tag when ``--older-than``/``--keep-last``
   are given); ``--keep-tag``, the N newest and the young ones are kept; the rest are removed.
   ``--manifest D`` removes D with every tag whose ``current/link`` holds it, as the API does.
2. What the removed tags reached (their manifest, index children, referrers) is removed when
   no kept tag reaches it and no revision that stays names it as a child; ``--untagged`` also
   removes every revision no kept tag reaches. Signature tags named after a removed manifest
   (``sha256-<hex>.sig`` and the like) are removed too, and step 2 runs again until nothing
   changes. Sibling tags are never touched: only their ``index/`` entries of removed revisions.
3. The blobs a correct GC frees afterwards are recomputed from scratch over the inventory
   minus everything removed, so the figure never depends on how the plan was reached.

Nothing here touches the disk; ``storscan.apply`` executes a Plan.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from storscan import layout as L
from storscan.errors import RefusedError, UsageError
from storscan.reach import Reach, short
from storscan.scan import Inventory, Repo
from storscan.select import Selection, age_text, matches
from storscan.usage import SCHEMA_VERSION, latest_push

TAG, INDEX, REVISION, UPLOAD, REPOSITORY = "tag", "index", "revision", "upload", "repository"
# Apply order: a tag goes before the revision it names, so an interrupted run never leaves a
# tag pointing at a revision that is gone.
KIND_ORDER = {TAG: 0, INDEX: 1, REVISION: 2, UPLOAD: 3, REPOSITORY: 4}


@dataclass(frozen=True)
class Action:
    """One directory to move out of the tree, with the rule that chose it.

    ``path`` is relative to the storage root; ``link`` is the digest the object's link file
    holds now and ``mtime`` that link's modification time (None where there is no link), so
    a saved plan can be checked against the tree before it is applied.
    """

    kind: str
    repository: str
    tag: str | None
    digest: str | None
    path: str
    reason: str
    link: str | None
    mtime: float | None


@dataclass(frozen=True)
class Plan:
    """What a prune removes and what a GC frees afterwards."""

    root: str
    selection: str
    actions: tuple[Action, ...]
    blobs_to_free: tuple[tuple[str, int], ...]
    bytes_to_free: int
    bytes_newly_unreferenced: int = 0

    def count(self, kind: str) -> int:
        return sum(1 for a in self.actions if a.kind == kind)

    def as_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "root": self.root,
            "selection": self.selection,
            "actions": [asdict(a) for a in self.actions],
            "blobs_to_free": [{"digest": d, "size": s} for d, s in self.blobs_to_free],
            "bytes_to_free": self.bytes_to_free,
        }


def v2_prefix(inv: Inventory) -> str:
    """The v2 directory relative to the storage root, with a trailing ``/`` (or empty)."""
    return inv.root.v2_prefix


def empty_revision_dirs(inv: Inventory) -> set[tuple[str, str]]:
    """(repository, digest) of revision directories without a link (left by API deletes)."""
    return {
        (f.repository, f.digest)
        for f in inv.findings
        if f.code == "revision_dir_empty" and f.repository and f.digest
    }


# -- step 1: tags ---------------------------------------------------------------------------


def _created(inv: Inventory, digest: str | None) -> float:
    man = inv.manifests.get(digest) if digest else None
    text = inv.created.get(man.config.digest) if man and man.config else None
    if not text:
        return float("-inf")
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return float("-inf")
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()


def select_tags(inv: Inventory, repo: Repo, sel: Selection) -> dict[str, str]:
    """Tags the tag rules remove, with the reason for each."""
    if not sel.selects_tags:
        return {}
    candidates = [
        t
        for t in repo.tags.values()
        if (not sel.tags or matches(t.name, sel.tags)) and not matches(t.name, sel.keep_tags)
    ]
    removed = {t.name: f"tag directory {t.name} has no current/link" for t in candidates}
    valid = [t for t in candidates if t.digest is not None]
    for t in valid:
        del removed[t.name]
    # Newest first: image `created`, then the tag link's mtime (when it was pushed or moved).
    valid.sort(key=lambda t: (_created(inv, t.digest), t.mtime or 0.0, t.name), reverse=True)
    keep_last = sel.keep_last
    newest = {t.name for t in valid[:keep_last]} if keep_last is not None else set()
    cutoff = (sel.now - sel.older_than).timestamp() if sel.older_than is not None else None
    for t in valid:
        young = cutoff is not None and (t.mtime or 0.0) >= cutoff
        if t.name in newest or young:
            continue
        why = []
        if sel.older_than is not None:
            why.append(f"older than {age_text(sel.older_than)}")
        if keep_last is not None:
            why.append(f"not among the {keep_last} newest")
        removed[t.name] = f"tag {t.name} " + (" and ".join(why) or "selected by --tag")
    return removed


def _manifest_rule(repo: Repo, sel: Selection, removed_tags: dict[str, str]) -> dict[str, str]:
    """``--manifest``: the revisions it names in ``repo``; their tags join ``removed_tags``."""
    explicit: dict[str, str] = {}
    tags = repo.valid_tags
    for digest in sel.manifests:
        pointing = sorted(t for t, d in tags.items() if d == digest)
        if digest not in repo.revisions and not pointing:
            continue
        explicit[digest] = f"manifest {short(digest)} removed (--manifest)"
        for tag in pointing:
            if matches(tag, sel.keep_tags):
                raise RefusedError(
                    f"--manifest {short(digest)} would remove {repo.name}:{tag}, which "
                    "--keep-tag protects; drop one of the two options"
                )
            removed_tags[tag] = f"tag {tag} points to removed manifest {short(digest)}"
    return explicit


# -- step 2: revisions ----------------------------------------------------------------------


def _cascade_reason(
    inv: Inventory, reach: Reach, repo: Repo, digest: str, gone: dict[str, str], removed: list[str]
) -> str:
    for tag in removed:
        if repo.tags[tag].digest == digest:
            return f"revision no kept tag reaches after removing tag {tag}"
    man = inv.manifests.get(digest)
    if man is not None and man.subject is not None and man.subject.digest in gone:
        return f"referrer of removed manifest {short(man.subject.digest)}"
    for tag in removed:
        if digest in reach.keep_from_tags(repo, [tag]):
            return f"revision no kept tag reaches after removing tag {tag}"
    return "revision no kept tag reaches"


def select_revisions(
    inv: Inventory, reach: Reach, repo: Repo, sel: Selection, removed_tags: dict[str, str]
) -> dict[str, str]:
    """Revisions to remove (digest -> reason); grows ``removed_tags`` with signature tags."""
    if sel.untagged and repo.bad_links.get("tags"):
        # A damaged current/link hides which image its tag means: never call that untagged.
        raise RefusedError(
            f"{repo.name} has tag links the registry cannot read, so what they tag is unknown; "
            "fix them first (storscan audit lists them), then prune --untagged"
        )
    explicit = _manifest_rule(repo, sel, removed_tags)
    while True:
        valid_removed = sorted(t for t in removed_tags if repo.tags[t].digest is not None)
        kept_tags = [t for t, tg in repo.tags.items() if tg.digest and t not in removed_tags]
        kept = reach.keep_from_tags(repo, kept_tags)
        for digest in explicit:
            if digest in kept:  # every tag naming it is removed: a kept image still needs it
                raise RefusedError(
                    f"--manifest {short(digest)} is still needed in {repo.name} ({kept[digest]}); "
                    "remove that tag too, or leave the manifest"
                )
        before = reach.keep_from_tags(repo, valid_removed)
        cascade = [d for d in before if d in repo.revisions and d not in kept]
        if sel.untagged:
            cascade += [d for d in repo.revisions if d not in kept and d not in before]
        # A revision that stays keeps its index children: never cut them from under it.
        staying = [d for d in repo.revisions if d not in explicit and d not in cascade]
        protected = {c for s in staying for c in reach.manifests_of(s)}
        gone = dict(explicit)
        for digest in sorted(cascade):
            if digest not in protected and digest not in gone:
                gone[digest] = "untagged" if digest not in before else ""
        for digest, why in list(gone.items()):
            if not why:
                gone[digest] = _cascade_reason(inv, reach, repo, digest, gone, valid_removed)
        signatures = {
            t: f"signature tag of removed manifest {short(subject)}"
            for t in kept_tags
            if (subject := L.signature_tag_subject(t)) in gone and not matches(t, sel.keep_tags)
        }
        if not signatures:
            return gone
        removed_tags.update(signatures)


# -- assembling the plan --------------------------------------------------------------------


def _repo_actions(inv: Inventory, repo: Repo, prefix: str) -> list[Action]:
    """``--delete-repo``: the repository directory, or only its reserved directories when
    another repository lives below it."""
    base = prefix + L.repo_dir(repo.name)
    nested = sorted(n for n in inv.repos if n.startswith(repo.name + "/"))
    stamp = latest_push(repo)
    if not nested:
        why = f"repository {repo.name} deleted (--delete-repo)"
        return [Action(REPOSITORY, repo.name, None, None, base, why, None, stamp)]
    return [
        Action(
            REPOSITORY,
            repo.name,
            None,
            None,
            f"{base}/{m}",
            f"repository {repo.name} deleted (--delete-repo): {m} only, {nested[0]} stays",
            None,
            stamp,
        )
        for m in sorted(repo.markers)
    ]


def _upload_actions(repo: Repo, sel: Selection, prefix: str) -> list[Action]:
    if sel.uploads_older_than is None:
        return []
    out = []
    for up in sorted(repo.uploads, key=lambda u: u.id):
        started = up.started or datetime.fromtimestamp(up.mtime, UTC)
        if sel.now - started <= sel.uploads_older_than:
            continue
        why = (
            f"upload {up.id} started {started:%Y-%m-%dT%H:%M:%SZ}, "
            f"older than {age_text(sel.uploads_older_than)}"
        )
        path = prefix + L.upload_dir(repo.name, up.id)
        out.append(Action(UPLOAD, repo.name, None, None, path, why, None, up.mtime))
    return out


def _prune_actions(
    inv: Inventory, reach: Reach, repo: Repo, sel: Selection, prefix: str, empty: set[str]
) -> tuple[list[Action], set[str]]:
    removed_tags = select_tags(inv, repo, sel)
    gone = select_revisions(inv, reach, repo, sel, removed_tags)
    out = []
    for name, why in sorted(removed_tags.items()):
        t = repo.tags[name]
        path = prefix + L.tag_dir(repo.name, name)
        out.append(Action(TAG, repo.name, name, t.digest, path, why, t.digest, t.mtime))
    leftovers = {d: "revision directory without link (left by an API delete)" for d in empty}
    gone_dirs = {**gone, **(leftovers if sel.untagged else {})}
    for digest, why in sorted(gone_dirs.items()):
        if digest in repo.revisions:
            link, mtime = digest, repo.revisions[digest]
        elif digest in empty:
            link, mtime = None, None
        else:
            continue  # a tag named a manifest this repository holds no revision of
        path = prefix + L.revision_dir(repo.name, digest)
        out.append(Action(REVISION, repo.name, None, digest, path, why, link, mtime))
        for tag in sorted(t for t in repo.tags if t not in removed_tags):
            if digest in repo.tags[tag].history:
                hpath = prefix + L.tag_index_dir(repo.name, tag, digest)
                hwhy = f"history entry of removed revision {short(digest)}"
                out.append(Action(INDEX, repo.name, tag, digest, hpath, hwhy, digest, None))
    return out, set(gone)


def _refuse_wiping_everything(inv: Inventory, sel: Selection, actions: list[Action]) -> None:
    total = sum(len(r.valid_tags) for r in inv.repos.values())
    removed = sum(1 for a in actions if a.kind == TAG and a.link is not None)
    deleted = {a.repository for a in actions if a.kind == REPOSITORY}
    removed += sum(len(inv.repos[n].valid_tags) for n in deleted)
    if total and removed >= total and not sel.repos:
        raise RefusedError(
            f"this selection removes every tag of every repository ({total} tags); "
            "name the repositories with --repo (e.g. --repo '**') if that is intended"
        )


def blobs_after(
    inv: Inventory, reach: Reach, deleted: set[str], gone: dict[str, set[str]]
) -> set[str]:
    """Present blobs still reachable (scope ``all``) once the plan is applied."""
    live: set[str] = set()
    for name, repo in inv.repos.items():
        if name in deleted:
            continue
        drop = gone.get(name, set())
        live |= reach.blobs_of_many(d for d in repo.revisions if d not in drop and d in inv.blobs)
    return live


def build_plan(inv: Inventory, sel: Selection, reach: Reach | None = None) -> Plan:
    """Decide what a prune removes. Pure: reads the Inventory, touches nothing."""
    reach = reach or Reach(inv)
    prefix = v2_prefix(inv)
    empties = empty_revision_dirs(inv)
    actions: list[Action] = []
    deleted: set[str] = set()
    gone: dict[str, set[str]] = {}
    for repo in inv.repos.values():
        if not sel.chosen(repo.name):
            continue
        if sel.delete_repo:
            actions += _repo_actions(inv, repo, prefix)
            deleted.add(repo.name)
            continue
        empty = {d for r, d in empties if r == repo.name}
        acts, gone[repo.name] = _prune_actions(inv, reach, repo, sel, prefix, empty)
        actions += acts + _upload_actions(repo, sel, prefix)
    _refuse_wiping_everything(inv, sel, actions)
    live = blobs_after(inv, reach, deleted, gone)
    live_now = blobs_after(inv, reach, set(), {})
    free = tuple(sorted((d, b.size) for d, b in inv.blobs.items() if d not in live))
    newly = sum(size for d, size in free if d in live_now)
    actions.sort(key=lambda a: (a.repository, KIND_ORDER[a.kind], a.path))
    return Plan(
        root=str(inv.root.storage_root.resolve()),
        selection=sel.describe(),
        actions=tuple(actions),
        blobs_to_free=free,
        bytes_to_free=sum(size for _, size in free),
        bytes_newly_unreferenced=newly,
    )


# -- saved plans ----------------------------------------------------------------------------


def plan_to_json(plan: Plan) -> str:
    return json.dumps(plan.as_dict(), indent=2) + "\n"


def plan_from_json(text: str, source: str) -> Plan:
    """Load a plan saved with ``--plan-out``; malformed input is a usage error."""
    try:
        data = json.loads(text)
        actions = tuple(
            Action(
                kind=str(a["kind"]),
                repository=str(a["repository"]),
                tag=a["tag"],
                digest=a["digest"],
                path=str(a["path"]),
                reason=str(a["reason"]),
                link=a["link"],
                mtime=a["mtime"],
            )
            for a in data["actions"]
        )
        free = tuple((str(b["digest"]), int(b["size"])) for b in data["blobs_to_free"])
        plan = Plan(
            str(data["root"]),
            str(data.get("selection", "")),
            actions,
            free,
            int(data["bytes_to_free"]),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise UsageError(
            f"{source}: not a storscan plan ({exc}); save one with --plan-out"
        ) from exc
    if data.get("schema_version") != SCHEMA_VERSION:
        raise UsageError(f"{source}: plan schema_version {data.get('schema_version')!r} unknown")
    for a in actions:
        if a.kind not in KIND_ORDER:
            raise UsageError(f"{source}: unknown action kind {a.kind!r}")
    return plan


def render_plan(plan: Plan, fmt: str) -> str:
    """The plan for people (``table``) or machines (``json``, raw bytes)."""
    if fmt == "json":
        return plan_to_json(plan)
    from storscan.report.tables import size

    rows = [("KIND", "REPOSITORY", "TAG", "DIGEST", "REASON")]
    rows += [
        (a.kind, a.repository, a.tag or "-", short(a.digest) if a.digest else "-", a.reason)
        for a in plan.actions
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = [f"root       {plan.root}", f"selection  {plan.selection}", ""]
    if plan.actions:
        for row in rows:
            cells = [c.ljust(w) for c, w in zip(row[:4], widths, strict=True)]
            lines.append("  ".join([*cells, row[4]]))
    else:
        lines.append("nothing to remove")
    counts = ", ".join(f"{plan.count(k)} {k}" for k in KIND_ORDER)
    lines += [
        "",
        f"removes    {counts}",
        f"then GC    frees {len(plan.blobs_to_free)} blobs, {size(plan.bytes_to_free)} "
        f"({plan.bytes_to_free} bytes)",
    ]
    return "\n".join(lines) + "\n"
