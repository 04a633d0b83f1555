"""The registry as a networkx graph: repositories, tags, manifest revisions and blobs.

Nodes are compact integers; what describes them lives in columns (lists indexed by node id),
so a graph of millions of objects stays lean. Edges say what links or references what:
repository -> tag -> revision, repository -> revision, revision -> manifest blob, manifest ->
config, layers and index children (recursively, through the child's own blob node), and
referrer -> subject.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import networkx as nx

from storscan.scan import Inventory

REPOSITORY = "repository"
TAG = "tag"
REVISION = "revision"
BLOB = "blob"


@dataclass
class RegistryGraph:
    """A DiGraph over integer node ids plus per-node columns."""

    g: Any = field(default_factory=lambda: nx.DiGraph())
    kind: list[str] = field(default_factory=list)
    label: list[str] = field(default_factory=list)
    size: list[int] = field(default_factory=list)  # blob bytes; -1 when absent or not a blob
    media_type: list[str] = field(default_factory=list)
    _blob_ids: dict[str, int] = field(default_factory=dict)

    def add(self, kind: str, label: str, size: int = -1, media_type: str = "") -> int:
        node = len(self.kind)
        self.kind.append(kind)
        self.label.append(label)
        self.size.append(size)
        self.media_type.append(media_type)
        self.g.add_node(node)
        return node

    def blob(self, inv: Inventory, digest: str) -> int:
        node = self._blob_ids.get(digest)
        if node is None:
            present = inv.blobs.get(digest)
            man = inv.manifests.get(digest)
            node = self.add(
                BLOB, digest, present.size if present else -1, man.media_type if man else ""
            )
            self._blob_ids[digest] = node
        return node

    def node_attrs(self, node: int) -> dict[str, Any]:
        return {
            "kind": self.kind[node],
            "label": self.label[node],
            "size": self.size[node],
            "media_type": self.media_type[node],
        }


def build(inv: Inventory) -> RegistryGraph:
    """Build the graph of an Inventory."""
    rg = RegistryGraph()
    for digest in inv.blobs:
        rg.blob(inv, digest)
    for man in inv.manifests.values():
        src = rg.blob(inv, man.digest)
        for role, descs in (
            ("config", (man.config,) if man.config else ()),
            ("layer", man.layers),
            ("child", man.children),
        ):
            for desc in descs:
                rg.g.add_edge(src, rg.blob(inv, desc.digest), role=role)
        if man.subject is not None:
            rg.g.add_edge(src, rg.blob(inv, man.subject.digest), role="subject")
    for repo in inv.repos.values():
        rnode = rg.add(REPOSITORY, repo.name)
        revisions: dict[str, int] = {}
        for digest in repo.revisions:
            node = rg.add(REVISION, f"{repo.name}@{digest}")
            revisions[digest] = node
            rg.g.add_edge(rnode, node, role="revision")
            rg.g.add_edge(node, rg.blob(inv, digest), role="manifest")
        for tag in repo.tags.values():
            tnode = rg.add(TAG, f"{repo.name}:{tag.name}")
            rg.g.add_edge(rnode, tnode, role="tag")
            if tag.digest is not None:
                target = revisions.get(tag.digest)
                if target is None:  # a tag without a revision: point at the blob (broken image)
                    target = rg.blob(inv, tag.digest)
                rg.g.add_edge(tnode, target, role="current")
    return rg


def _labelled(rg: RegistryGraph) -> Any:
    out: Any = nx.DiGraph()
    for node in rg.g.nodes:
        out.add_node(node, **rg.node_attrs(node))
    out.add_edges_from(rg.g.edges(data=True))
    return out


def to_graphml(rg: RegistryGraph) -> str:
    """GraphML text with kind, label, size and media_type on every node."""
    return "\n".join(nx.generate_graphml(_labelled(rg))) + "\n"


def to_json(rg: RegistryGraph) -> str:
    """Node-link JSON (``nodes`` and ``edges``) with the same attributes."""
    data = nx.node_link_data(_labelled(rg), edges="edges")
    return json.dumps({"schema_version": 1, **data}, indent=1) + "\n"
