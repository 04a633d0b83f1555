"""``storscan graph``: typed nodes and the edges between them, against the push log.

Nodes are identified by kind and label: a repository by its name, a tag by ``repo:tag``, a
revision (a manifest digest within a repository) by ``repo@digest``, a blob by its digest.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import networkx as nx
import pytest

from tests.helpers import EXIT_OK, Log, Pushed, cli

Node = tuple[str, str]
Edge = tuple[Node, Node]


def expected_graph(pushed: Pushed) -> tuple[set[Node], set[Edge]]:
    """Nodes and edges the push log implies (a deleted manifest has no revision any more)."""
    nodes: set[Node] = {("repository", r) for r in pushed["repositories"]}
    nodes |= {("blob", b["digest"]) for b in pushed["blobs"]}
    nodes |= {("blob", m["digest"]) for m in pushed["manifests"]}
    edges: set[Edge] = set()
    for m in pushed["manifests"]:
        if m["deleted"]:
            continue
        repo, blob = ("repository", m["repo"]), ("blob", m["digest"])
        revision = ("revision", f"{m['repo']}@{m['digest']}")
        nodes.add(revision)
        edges |= {(repo, revision), (revision, blob)}
        # references: config and layers of an image, or the children of an index.
        edges |= {(blob, ("blob", ref)) for ref in m["references"]}
        if m["subject"]:
            edges.add((blob, ("blob", m["subject"])))
    for repo, tags in pushed["final_tags"].items():
        for tag, digest in tags.items():
            node = ("tag", f"{repo}:{tag}")
            nodes.add(node)
            edges |= {(("repository", repo), node), (node, ("revision", f"{repo}@{digest}"))}
    return nodes, edges


class Exported:
    """An exported graph as labelled nodes and edges (with each edge's role)."""

    def __init__(self, g: Any) -> None:
        self.attrs = {n: dict(a) for n, a in g.nodes(data=True)}
        self.key = {n: (a["kind"], a["label"]) for n, a in self.attrs.items()}
        assert len(set(self.key.values())) == len(self.key), "two nodes share kind and label"
        self.nodes = set(self.key.values())
        self.roles = {(self.key[u], self.key[v]): a.get("role") for u, v, a in g.edges(data=True)}
        self.edges = set(self.roles)
        self.size = {self.key[n]: int(a["size"]) for n, a in self.attrs.items()}


@pytest.fixture(scope="module")
def exported(demo_master: Path) -> dict[str, Exported]:
    as_json = cli("graph", demo_master, "--format", "json")
    assert as_json.code == EXIT_OK, as_json.describe()
    data = json.loads(as_json.stdout)
    g = nx.node_link_graph(data, directed=True, multigraph=False, edges="edges")
    as_graphml = cli("graph", demo_master, "--format", "graphml")
    assert as_graphml.code == EXIT_OK, as_graphml.describe()
    gml = nx.read_graphml(io.BytesIO(as_graphml.stdout.encode()))
    return {"json": Exported(g), "graphml": Exported(gml)}


@pytest.mark.parametrize("fmt", ["json", "graphml"])
def test_nodes_and_edges_match_the_push_log(
    exported: dict[str, Exported], pushed: Pushed, fmt: str
) -> None:
    nodes, edges = expected_graph(pushed)
    got = exported[fmt]
    assert got.nodes == nodes
    assert got.edges == edges


@pytest.mark.parametrize("fmt", ["json", "graphml"])
def test_blob_nodes_carry_their_size(exported: dict[str, Exported], log: Log, fmt: str) -> None:
    got = exported[fmt]
    for digest, size in log.size_of.items():
        assert got.size[("blob", digest)] == size, digest


def test_multi_arch_image_path(exported: dict[str, Exported], log: Log) -> None:
    """tools/cli:1.0 -> revision -> index blob -> child blobs -> their config and layers."""
    got = exported["json"]
    index = log.manifest("cli-index")
    tag, revision = ("tag", "tools/cli:1.0"), ("revision", f"tools/cli@{index['digest']}")
    index_blob = ("blob", index["digest"])
    assert (("repository", "tools/cli"), tag) in got.edges
    assert (tag, revision) in got.edges
    assert (revision, index_blob) in got.edges
    for child_name, arch in [("cli-amd64", "amd64"), ("cli-arm64", "arm64")]:
        child = ("blob", log.digest(child_name))
        assert got.roles[(index_blob, child)] == "child"
        assert got.roles[(child, ("blob", log.digest(f"{child_name}-config")))] == "config"
        assert got.roles[(child, ("blob", log.digest(f"{child_name}-layer")))] == "layer"
        assert got.roles[(child, ("blob", log.digest("base-layer")))] == "layer"
        # The child is also a revision of tools/cli, pushed by digest, with no tag of its own.
        child_rev = ("revision", f"tools/cli@{log.digest(child_name)}")
        assert (("repository", "tools/cli"), child_rev) in got.edges
        assert not any(dst == child_rev for (src, dst) in got.edges if src[0] == "tag"), arch


def test_referrer_points_at_its_subject(exported: dict[str, Exported], log: Log) -> None:
    got = exported["json"]
    sbom, web = ("blob", log.digest("web-sbom")), ("blob", log.digest("web"))
    assert got.roles[(sbom, web)] == "subject"
    assert got.roles[(sbom, ("blob", log.digest("web-sbom-blob")))] == "layer"
    assert (web, sbom) not in got.edges  # the subject does not name its referrers


def test_two_tags_on_one_manifest(exported: dict[str, Exported], log: Log) -> None:
    got = exported["json"]
    revision = ("revision", f"library/alpine@{log.digest('alpine')}")
    tags = {src for (src, dst) in got.edges if dst == revision and src[0] == "tag"}
    assert tags == {("tag", "library/alpine:3.19"), ("tag", "library/alpine:latest")}
