"""The pure planning step of prune: exact plans and bytes, and its two safety properties.

Expected values come from ``fixtures/demo.pushed.json`` (what was pushed) or from the small
synthetic registries built here, never from storscan's output.
"""

from __future__ import annotations

import copy
import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from storscan import layout as L
from storscan.errors import RefusedError, UsageError
from storscan.manifest import IMAGE, INDEX, Descriptor, Manifest
from storscan.plan import Plan, build_plan, plan_from_json, plan_to_json
from storscan.reach import Reach, short
from storscan.root import Root, resolve_root
from storscan.scan import Blob, Inventory, Repo, Tag, Upload, scan
from storscan.select import Selection, build_selection, glob_regex, matches
from storscan.usage import compute
from tests.support.tree import DEMO_ARCHIVE, extract_archive, load_pushed

NOW = datetime(2027, 1, 1, tzinfo=UTC)
PUSHED = load_pushed()
V2 = "docker/registry/v2/"


def man(name: str) -> str:
    [rec] = [m for m in PUSHED["manifests"] if m["name"] == name]
    return str(rec["digest"])


def blob(name: str) -> str:
    [rec] = [b for b in PUSHED["blobs"] if b["name"] == name]
    return str(rec["digest"])


def stored_sizes() -> dict[str, int]:
    sizes = {b["digest"]: b["size"] for b in PUSHED["blobs"]}
    sizes.update({m["digest"]: m["size"] for m in PUSHED["manifests"]})
    return sizes


def image_blobs(*names: str) -> set[str]:
    """A manifest's own blob and everything it references (config, layers)."""
    out: set[str] = set()
    for name in names:
        [rec] = [m for m in PUSHED["manifests"] if m["name"] == name]
        out |= {rec["digest"], *rec["references"]}
    return out


# Unreferenced before any prune: the API-deleted manifest with its blobs, the orphan layer
# and the blob pushed with no manifest.
BASELINE = image_blobs("bar-old") | {blob("bar-orphan-layer"), blob("scratch-layer")}
BASE = blob("base-layer")


@pytest.fixture(scope="module")
def demo_inv(tmp_path_factory: pytest.TempPathFactory) -> Inventory:
    root = extract_archive(DEMO_ARCHIVE, tmp_path_factory.mktemp("plan") / "demo")
    return scan(resolve_root(root))


def plan_for(inv: Inventory, **flags: Any) -> Plan:
    return build_plan(inv, build_selection(now=NOW, **flags))


def rows(plan: Plan) -> list[tuple[str, str, str | None, str | None, str]]:
    return [(a.kind, a.repository, a.tag, a.digest, a.reason) for a in plan.actions]


def hist(digest: str) -> str:
    return f"history entry of removed revision {short(digest)}"


AFTER = "revision no kept tag reaches after removing tag"
DEMO_CASES: list[tuple[str, dict[str, Any], list[Any], set[str]]] = [
    (
        "untagged everywhere",
        {"untagged": True},
        [
            ("index", "foo/bar", "1.0", man("bar-old"), hist(man("bar-old"))),
            (
                "revision",
                "foo/bar",
                None,
                man("bar-old"),
                "revision directory without link (left by an API delete)",
            ),
            ("index", "team/app/api", "v1", man("api-v1"), hist(man("api-v1"))),
            ("revision", "team/app/api", None, man("api-v1"), "untagged"),
        ],
        image_blobs("api-v1") - {BASE},
    ),
    (
        "multi-arch tag removed with its children",
        {"repos": ["tools/cli"], "tags": ["1.0"]},
        [
            ("tag", "tools/cli", "1.0", man("cli-index"), "tag 1.0 selected by --tag"),
            ("revision", "tools/cli", None, man("cli-amd64"), f"{AFTER} 1.0"),
            ("revision", "tools/cli", None, man("cli-index"), f"{AFTER} 1.0"),
            ("revision", "tools/cli", None, man("cli-arm64"), f"{AFTER} 1.0"),
        ],
        image_blobs("cli-index", "cli-amd64", "cli-arm64") - {BASE},
    ),
    (
        "one of two tags on a manifest",
        {"repos": ["library/alpine"], "tags": ["latest"]},
        [("tag", "library/alpine", "latest", man("alpine"), "tag latest selected by --tag")],
        set(),
    ),
    (
        "keep-tag wins",
        {"repos": ["library/alpine"], "tags": ["*"], "keep_tags": ["3.*"]},
        [("tag", "library/alpine", "latest", man("alpine"), "tag latest selected by --tag")],
        set(),
    ),
    (
        "image with a referrer",
        {"repos": ["team/app/web"], "tags": ["v1"]},
        [
            ("tag", "team/app/web", "v1", man("web"), "tag v1 selected by --tag"),
            (
                "revision",
                "team/app/web",
                None,
                man("web-sbom"),
                f"referrer of removed manifest {short(man('web'))}",
            ),
            ("revision", "team/app/web", None, man("web"), f"{AFTER} v1"),
        ],
        image_blobs("web", "web-sbom") - {BASE},
    ),
    (
        "manifest delete takes every tag",
        {"repos": ["library/alpine"], "manifests": [man("alpine")]},
        [
            (
                "tag",
                "library/alpine",
                "3.19",
                man("alpine"),
                f"tag 3.19 points to removed manifest {short(man('alpine'))}",
            ),
            (
                "tag",
                "library/alpine",
                "latest",
                man("alpine"),
                f"tag latest points to removed manifest {short(man('alpine'))}",
            ),
            (
                "revision",
                "library/alpine",
                None,
                man("alpine"),
                f"manifest {short(man('alpine'))} removed (--manifest)",
            ),
        ],
        image_blobs("alpine") - {BASE},
    ),
    (
        "repository holding another repository",
        {"repos": ["foo"], "delete_repo": True},
        [
            (
                "repository",
                "foo",
                None,
                None,
                f"repository foo deleted (--delete-repo): {m} only, foo/bar stays",
            )
            for m in ("_layers", "_manifests", "_uploads")
        ],
        image_blobs("foo") - {BASE},
    ),
    (
        "nested repositories by glob",
        {"repos": ["team/**"], "delete_repo": True},
        [
            ("repository", r, None, None, f"repository {r} deleted (--delete-repo)")
            for r in ("team/app/api", "team/app/web")
        ],
        image_blobs("api-v1", "api-v2", "web", "web-sbom") - {BASE},
    ),
]


@pytest.mark.parametrize(
    ("flags", "expected", "freed"),
    [pytest.param(f, e, b, id=name) for name, f, e, b in DEMO_CASES],
)
def test_demo_plans(
    demo_inv: Inventory, flags: dict[str, Any], expected: list[Any], freed: set[str]
) -> None:
    plan = plan_for(demo_inv, **flags)
    assert rows(plan) == expected
    sizes = stored_sizes()
    want = BASELINE | freed
    assert dict(plan.blobs_to_free) == {d: sizes[d] for d in want}
    assert plan.bytes_to_free == sum(sizes[d] for d in want)
    assert plan.bytes_newly_unreferenced == sum(sizes[d] for d in freed)


def test_demo_paths_and_links(demo_inv: Inventory) -> None:
    plan = plan_for(demo_inv, repos=["team/app/api"], untagged=True)
    hexpart = man("api-v1").split(":")[1]
    base = f"{V2}repositories/team/app/api/_manifests"
    assert [a.path for a in plan.actions] == [
        f"{base}/tags/v1/index/sha256/{hexpart}",
        f"{base}/revisions/sha256/{hexpart}",
    ]
    index, revision = plan.actions
    assert index.link == revision.link == man("api-v1")
    assert revision.mtime == demo_inv.repos["team/app/api"].revisions[man("api-v1")]
    nested = plan_for(demo_inv, repos=["foo"], delete_repo=True)
    assert {a.path for a in nested.actions} == {
        f"{V2}repositories/foo/{m}" for m in ("_layers", "_manifests", "_uploads")
    }


def test_demo_stale_uploads(demo_inv: Inventory) -> None:
    plan = plan_for(demo_inv, uploads_older_than="1h")
    got = {(a.kind, a.repository, a.path) for a in plan.actions}
    assert got == {
        ("upload", u["repo"], f"{V2}repositories/{u['repo']}/_uploads/{u['uuid']}")
        for u in PUSHED["unfinished_uploads"]
    }
    assert all(a.reason.endswith("older than 1h") for a in plan.actions)
    young = build_plan(
        demo_inv,
        build_selection(uploads_older_than="1h", now=datetime(2026, 12, 4, 16, 46, tzinfo=UTC)),
    )
    assert young.actions == ()


def test_removing_every_tag_needs_named_repositories(demo_inv: Inventory) -> None:
    with pytest.raises(RefusedError, match="every tag of every repository"):
        plan_for(demo_inv, tags=["*"])
    plan = plan_for(demo_inv, repos=["**"], tags=["*"])
    tags = {(r, t) for r, tags in PUSHED["final_tags"].items() for t in tags}
    assert {(a.repository, a.tag) for a in plan.actions if a.kind == "tag"} == tags


def test_plan_json_round_trip(demo_inv: Inventory) -> None:
    plan = plan_for(demo_inv, untagged=True)
    again = plan_from_json(plan_to_json(plan), "plan.json")
    assert again.actions == plan.actions
    assert again.blobs_to_free == plan.blobs_to_free
    data = plan.as_dict()
    assert set(data) >= {"schema_version", "root", "actions", "blobs_to_free", "bytes_to_free"}
    assert set(data["actions"][0]) == {
        "kind",
        "repository",
        "tag",
        "digest",
        "path",
        "reason",
        "link",
        "mtime",
    }


# -- flags and globs --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("glob", "name", "hit"),
    [
        ("team/*", "team/app", True),
        ("team/*", "team/app/api", False),
        ("team/**", "team/app/api", True),
        ("**/api", "team/app/api", True),
        ("**/api", "api", True),
        ("lib?ary/*", "library/alpine", True),
        ("v1.*", "v1.2", True),
        ("v1.*", "v1x2", False),
        ("*", "foo/bar", False),
    ],
)
def test_globs(glob: str, name: str, hit: bool) -> None:
    assert (glob_regex(glob).fullmatch(name) is not None) is hit
    assert matches(name, [glob]) is hit


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({}, "nothing selected"),
        ({"delete_repo": True}, "needs --repo"),
        ({"delete_repo": True, "repos": ["a"], "tags": ["x"]}, "whole repositories"),
        ({"manifests": ["latest"]}, "not a digest"),
        ({"older_than": "30 days"}, "not a duration"),
        ({"older_than": "0d"}, "longer than zero"),
        ({"keep_tags": ["v1"], "untagged": True}, "--keep-tag only"),
    ],
)
def test_bad_flags(flags: dict[str, Any], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        build_selection(now=NOW, **flags)


# -- small synthetic registries ---------------------------------------------------------------


def dg(name: str) -> str:
    return "sha256:" + hashlib.sha256(name.encode()).hexdigest()


class Builder:
    """An Inventory built in memory: names become digests, each blob 100 bytes + its index."""

    def __init__(self) -> None:
        root = Path("/r")
        self.inv = Inventory(
            Root(root, root / "docker/registry/v2"), {}, {}, {}, {}, [], True, True
        )
        self.size = 100

    def _blob(self, digest: str) -> None:
        if digest not in self.inv.blobs:
            self.size += 1
            self.inv.blobs[digest] = Blob(self.size, 0.0)

    def repo(self, name: str) -> Repo:
        markers = frozenset({L.MANIFESTS, L.LAYERS})
        return self.inv.repos.setdefault(name, Repo(name, markers, has_tags_dir=True))

    def image(
        self,
        repo: str,
        name: str,
        layers: list[str],
        subject: str | None = None,
        created: str | None = None,
    ) -> str:
        digest, config = dg(name), dg(name + "-config")
        for d in [digest, config, *map(dg, layers)]:
            self._blob(d)
        subj = Descriptor(subject, 1) if subject else None
        self.inv.manifests[digest] = Manifest(
            digest,
            1,
            IMAGE,
            "application/vnd.oci.image.manifest.v1+json",
            config=Descriptor(config, 1, "application/vnd.oci.image.config.v1+json"),
            layers=tuple(Descriptor(dg(x), 1) for x in layers),
            subject=subj,
        )
        if created:
            self.inv.created[config] = created
        self.repo(repo).revisions[digest] = 1.0
        return digest

    def index(self, repo: str, name: str, children: list[str]) -> str:
        digest = dg(name)
        self._blob(digest)
        kids = tuple(Descriptor(c, 1) for c in children)
        self.inv.manifests[digest] = Manifest(
            digest, 1, INDEX, "application/vnd.oci.image.index.v1+json", children=kids
        )
        self.repo(repo).revisions[digest] = 1.0
        return digest

    def tag(self, repo: str, tag: str, digest: str, mtime: float = 1.0) -> None:
        self.repo(repo).tags[tag] = Tag(tag, digest, mtime, (digest,))


def test_signature_tags_follow_their_manifest() -> None:
    b = Builder()
    m1 = b.image("app", "m1", ["l1"])
    m2 = b.image("app", "m2", ["l2"])
    sig = b.image("app", "sig", ["s1"])
    b.tag("app", "v1", m1)
    b.tag("app", "v2", m2)
    sig_tag = "sha256-" + m1.split(":")[1] + ".sig"
    b.tag("app", sig_tag, sig)
    plan = build_plan(b.inv, build_selection(tags=["v1"], now=NOW))
    assert rows(plan) == [
        ("tag", "app", sig_tag, sig, f"signature tag of removed manifest {short(m1)}"),
        ("tag", "app", "v1", m1, "tag v1 selected by --tag"),
        *sorted(
            [
                ("revision", "app", None, m1, f"{AFTER} v1"),
                ("revision", "app", None, sig, f"{AFTER} {sig_tag}"),
            ],
            key=lambda r: str(r[3]),
        ),
    ]
    freed = {m1, dg("m1-config"), dg("l1"), sig, dg("sig-config"), dg("s1")}
    assert {d for d, _ in plan.blobs_to_free} == freed
    kept = build_plan(b.inv, build_selection(tags=["v1"], keep_tags=["sha256-*"], now=NOW))
    assert [a.tag for a in kept.actions if a.kind == "tag"] == ["v1"]


def test_keep_last_orders_by_created_then_mtime() -> None:
    b = Builder()
    a = b.image("app", "a", ["x"], created="2024-01-01T00:00:00Z")
    c = b.image("app", "c", ["y"], created="2025-01-01T00:00:00Z")
    d = b.image("app", "d", ["z"])  # no created: oldest
    b.tag("app", "old", a, mtime=900.0)
    b.tag("app", "new", c, mtime=100.0)
    b.tag("app", "same-a-later", a, mtime=950.0)
    b.tag("app", "nodate", d, mtime=999.0)
    plan = build_plan(b.inv, build_selection(repos=["app"], keep_last=2, now=NOW))
    assert [(a.tag, a.reason) for a in plan.actions if a.kind == "tag"] == [
        ("nodate", "tag nodate not among the 2 newest"),
        ("old", "tag old not among the 2 newest"),
    ]
    assert [a.digest for a in plan.actions if a.kind == "revision"] == [d]


def test_older_than_uses_tag_link_mtime() -> None:
    b = Builder()
    m = b.image("app", "m", ["x"])
    n = b.image("app", "n", ["y"])
    b.tag("app", "fresh", m, mtime=(NOW - timedelta(days=2)).timestamp())
    b.tag("app", "stale", n, mtime=(NOW - timedelta(days=40)).timestamp())
    plan = build_plan(b.inv, build_selection(repos=["app"], older_than="30d", now=NOW))
    assert rows(plan) == [
        ("tag", "app", "stale", n, "tag stale older than 30d"),
        ("revision", "app", None, n, f"{AFTER} stale"),
    ]
    both = build_plan(b.inv, build_selection(repos=["app"], older_than="1d", keep_last=1, now=NOW))
    assert [a.reason for a in both.actions if a.kind == "tag"] == [
        "tag stale older than 1d and not among the 1 newest"
    ]


def test_untagged_index_that_stays_keeps_its_children() -> None:
    b = Builder()
    child = b.image("app", "child", ["x"])
    b.index("app", "list", [child])  # untagged, stays without --untagged
    b.tag("app", "c", child)
    b.tag("app", "other", b.image("app", "o", ["y"]))
    plan = build_plan(b.inv, build_selection(tags=["c"], now=NOW))
    assert rows(plan) == [("tag", "app", "c", child, "tag c selected by --tag")]


def test_manifest_needed_by_a_kept_index_is_refused() -> None:
    b = Builder()
    child = b.image("app", "child", ["x"])
    b.tag("app", "multi", b.index("app", "list", [child]))
    with pytest.raises(RefusedError, match="still needed"):
        build_plan(b.inv, build_selection(manifests=[child], now=NOW))


def test_keep_tag_protected_manifest_is_refused() -> None:
    b = Builder()
    m = b.image("app", "m", ["x"])
    b.tag("app", "v1", m)
    b.tag("app", "v2", b.image("app", "n", ["y"]))
    sel = build_selection(manifests=[m], tags=["zzz"], keep_tags=["v1"], now=NOW)
    with pytest.raises(RefusedError, match="--keep-tag protects"):
        build_plan(b.inv, sel)


# -- properties -------------------------------------------------------------------------------


@st.composite
def registries(draw: st.DrawFn) -> Inventory:
    b = Builder()
    layers = [f"layer{i}" for i in range(5)]
    for r in range(draw(st.integers(1, 3))):
        repo = f"r{r}" if r != 2 else "r0/sub"
        made: list[str] = []
        for m in range(draw(st.integers(1, 5))):
            name = f"{repo}-m{m}"
            images = [d for d in made if b.inv.manifests[d].kind == IMAGE]
            if images and draw(st.booleans()):
                kids = draw(st.lists(st.sampled_from(images), min_size=1, max_size=2, unique=True))
                made.append(b.index(repo, name, kids))
            else:
                subject = draw(st.sampled_from([None, *made])) if made else None
                picked = draw(st.lists(st.sampled_from(layers), min_size=1, max_size=2))
                created = f"2024-01-{draw(st.integers(1, 28)):02d}T00:00:00Z"
                made.append(b.image(repo, name, picked, subject, created))
        for t in range(draw(st.integers(0, 4))):
            target = draw(st.sampled_from(made))
            name = draw(st.sampled_from([f"v{t}", "latest", f"sha256-{target[7:]}.sig"]))
            b.tag(repo, name, target, mtime=float(draw(st.integers(0, 10)) * 86400))
    return b.inv


@st.composite
def selections(draw: st.DrawFn) -> Selection:
    flags: dict[str, Any] = {"repos": draw(st.sampled_from([[], ["r0"], ["r0/**"], ["**"]]))}
    if draw(st.booleans()) and flags["repos"]:
        flags["delete_repo"] = True
        return build_selection(now=datetime.fromtimestamp(11 * 86400, UTC), **flags)
    flags["tags"] = draw(st.sampled_from([[], ["v*"], ["latest"], ["*"]]))
    flags["keep_last"] = draw(st.sampled_from([None, 0, 1, 2]))
    flags["older_than"] = draw(st.sampled_from([None, "3d", "8d"]))
    flags["untagged"] = draw(st.booleans())
    if flags["tags"] or flags["keep_last"] is not None or flags["older_than"]:
        flags["keep_tags"] = draw(st.sampled_from([[], ["latest"]]))
    assume(
        flags["tags"] or flags["keep_last"] is not None or flags["older_than"] or flags["untagged"]
    )
    return build_selection(now=datetime.fromtimestamp(11 * 86400, UTC), **flags)


def simulate(inv: Inventory, plan: Plan) -> Inventory:
    """What the tree looks like after apply: the plan's directories gone."""
    after = copy.deepcopy(inv)
    for a in plan.actions:
        if a.kind == "repository":
            after.repos.pop(a.repository, None)  # whole, or each of its reserved directories
            continue
        repo = after.repos[a.repository]
        if a.kind == "tag":
            del repo.tags[a.tag or ""]
        elif a.kind == "index":
            tag = repo.tags[a.tag or ""]
            tag.history = tuple(h for h in tag.history if h != a.digest)
        elif a.kind == "revision":
            repo.revisions.pop(a.digest or "", None)
        elif a.kind == "upload":
            repo.uploads = [u for u in repo.uploads if not a.path.endswith(u.id)]
    return after


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(inv=registries(), sel=selections())
def test_nothing_a_kept_tag_reaches_is_removed(inv: Inventory, sel: Selection) -> None:
    try:
        plan = build_plan(inv, sel)
    except RefusedError:
        assume(False)
        return
    reach = Reach(inv)
    removed_tags = {(a.repository, a.tag) for a in plan.actions if a.kind == "tag"}
    removed_revs = {(a.repository, a.digest) for a in plan.actions if a.kind == "revision"}
    deleted = {a.repository for a in plan.actions if a.kind == "repository"}
    freed = {d for d, _ in plan.blobs_to_free}
    for repo in inv.repos.values():
        if repo.name in deleted:
            continue
        kept_tags = [t for t in repo.valid_tags if (repo.name, t) not in removed_tags]
        kept = reach.keep_from_tags(repo, kept_tags)
        assert not {(repo.name, d) for d in kept} & removed_revs
        assert not reach.blobs_of_many(kept) & freed


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(inv=registries(), sel=selections())
def test_planning_after_applying_is_empty(inv: Inventory, sel: Selection) -> None:
    try:
        plan = build_plan(inv, sel)
    except RefusedError:
        assume(False)
        return
    after = simulate(inv, plan)
    assert build_plan(after, sel).actions == ()
    # The bytes a GC frees are exactly what is unreferenced once the plan is applied.
    assert plan.bytes_to_free == compute(after).summary.unreferenced_bytes


def test_upload_without_startedat_ages_by_mtime() -> None:
    b = Builder()
    repo = b.repo("app")
    repo.uploads.append(Upload("u1", 10, None, (NOW - timedelta(days=9)).timestamp()))
    plan = build_plan(b.inv, build_selection(uploads_older_than="7d", now=NOW))
    assert [(a.kind, a.path) for a in plan.actions] == [
        ("upload", f"{V2}repositories/app/_uploads/u1")
    ]
