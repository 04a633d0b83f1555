"""Parse manifest blobs of every kind the registry stores, the way the registry reads them."""

from __future__ import annotations

import json
import sys
from functools import partial
from typing import Any, NamedTuple

from storscan.layout import parse_digest

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+json"
SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"
IMAGE_CONFIG_TYPES = frozenset(
    {"application/vnd.docker.container.image.v1+json", "application/vnd.oci.image.config.v1+json"}
)

IMAGE = "image"
INDEX = "index"
SCHEMA1_KIND = "schema1"


class Descriptor(NamedTuple):
    """A reference from a manifest to a blob or another manifest."""

    digest: str
    size: int  # -1 when the format carries no size (schema1)
    media_type: str = ""
    foreign: bool = False  # legitimately absent from storage (urls, non-distributable)
    platform: str = ""


class Manifest(NamedTuple):
    """A parsed manifest blob. References are in the order the registry marks them."""

    digest: str
    size: int
    kind: str
    media_type: str
    config: Descriptor | None = None
    layers: tuple[Descriptor, ...] = ()
    children: tuple[Descriptor, ...] = ()
    subject: Descriptor | None = None
    artifact_type: str = ""

    @property
    def blob_refs(self) -> tuple[Descriptor, ...]:
        """Config and layers (not children), as GC marks them."""
        return ((self.config,) if self.config else ()) + self.layers

    @property
    def references(self) -> tuple[Descriptor, ...]:
        """Everything the registry's References() lists."""
        return self.blob_refs + self.children


_new_tuple = tuple.__new__
_descriptor_from_wire = partial(_new_tuple, Descriptor)


def to_wire(m: Manifest) -> tuple[Any, ...]:
    """A manifest as plain tuples, to send between processes: pickle handles plain tuples in
    C, but calls back into Python for every named tuple, each way."""
    return (
        *m[:4],
        m.config and tuple(m.config),
        tuple(map(tuple, m.layers)),
        tuple(map(tuple, m.children)),
        m.subject and tuple(m.subject),
        m.artifact_type,
    )


def from_wire(w: tuple[Any, ...]) -> Manifest:
    """The Manifest that ``to_wire`` flattened."""
    digest, size, kind, media_type, config, layers, children, subject, artifact_type = w
    return _new_tuple(
        Manifest,
        (
            digest,
            size,
            kind,
            media_type,
            config and _descriptor_from_wire(config),
            tuple(map(_descriptor_from_wire, layers)),
            tuple(map(_descriptor_from_wire, children)),
            subject and _descriptor_from_wire(subject),
            artifact_type,
        ),
    )


class ManifestError(ValueError):
    """The blob is not a manifest the registry can load."""


_COMMON_MEDIA_TYPES = frozenset(
    {
        "application/vnd.docker.image.rootfs.diff.tar.gzip",
        "application/vnd.docker.container.image.v1+json",
        "application/vnd.oci.image.layer.v1.tar+gzip",
        "application/vnd.oci.image.layer.v1.tar",
        "application/vnd.oci.image.layer.v1.tar+zstd",
        "application/vnd.oci.image.config.v1+json",
        DOCKER_MANIFEST,
        OCI_MANIFEST,
    }
)


def _descriptor(obj: Any) -> Descriptor:
    """A descriptor object as a Descriptor; ManifestError says what is wrong with it.

    Runs for every reference of every manifest: exact type tests (json makes no subclasses),
    no message built unless it fails, and a direct tuple construction keep it cheap.
    """
    if type(obj) is not dict:
        raise ManifestError("is not an object")
    digest = obj.get("digest")
    if type(digest) is not str or parse_digest(digest) is None:
        raise ManifestError(f"has an invalid digest {digest!r}")
    size = obj.get("size", -1)
    if type(size) is not int:  # a float or a bool is not a size
        raise ManifestError(f"has an invalid size {size!r}")
    media_type = obj.get("mediaType") or ""
    if type(media_type) is not str:
        media_type = ""
    foreign = bool(obj.get("urls")) or (
        media_type not in _COMMON_MEDIA_TYPES
        and ("foreign" in media_type or "nondistributable" in media_type)
    )
    platform = ""
    plat = obj.get("platform")
    if type(plat) is dict:
        platform = "/".join(
            str(plat[k]) for k in ("os", "architecture", "variant") if isinstance(plat.get(k), str)
        )
    # Interned: the same digests and media types recur across a registry's manifests.
    return _new_tuple(
        Descriptor, (sys.intern(digest), size, sys.intern(media_type), foreign, platform)
    )


def _named(obj: Any, where: str) -> Descriptor:
    try:
        return _descriptor(obj)
    except ManifestError as exc:
        raise ManifestError(f"{where} {exc}") from None


def _descriptors(obj: Any, key: str) -> tuple[Descriptor, ...]:
    items = obj.get(key)
    if items is None:
        return ()
    if not isinstance(items, list):
        raise ManifestError(f"{key} is not a list")
    out = []
    for i, item in enumerate(items):
        try:
            out.append(_descriptor(item))
        except ManifestError as exc:
            raise ManifestError(f"{key}[{i}] {exc}") from None
    return tuple(out)


def parse_manifest(digest: str, body: bytes) -> Manifest:
    """Parse a stored manifest blob or raise ManifestError with the registry's view of why."""
    try:
        obj = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(f"not JSON ({exc})") from exc
    except RecursionError as exc:
        raise ManifestError("JSON nested too deeply to be a manifest") from exc
    if not isinstance(obj, dict):
        raise ManifestError("not a JSON object")
    version = obj.get("schemaVersion")
    media_type = obj.get("mediaType") or ""
    if version == 1:
        layers = []
        for i, layer in enumerate(obj.get("fsLayers") or []):
            blob_sum = layer.get("blobSum") if isinstance(layer, dict) else None
            if not isinstance(blob_sum, str) or parse_digest(blob_sum) is None:
                raise ManifestError(f"fsLayers[{i}] has an invalid blobSum {blob_sum!r}")
            layers.append(Descriptor(blob_sum, -1))
        return Manifest(
            digest, len(body), SCHEMA1_KIND, media_type or SCHEMA1, layers=tuple(layers)
        )
    if version != 2:
        raise ManifestError(f"unrecognized manifest schema version {version!r}")
    if media_type in (DOCKER_LIST, OCI_INDEX) or (not media_type and "manifests" in obj):
        return Manifest(
            digest,
            len(body),
            INDEX,
            media_type or OCI_INDEX,
            children=_descriptors(obj, "manifests"),
            subject=_named(obj["subject"], "subject") if obj.get("subject") else None,
            artifact_type=str(obj.get("artifactType") or ""),
        )
    if media_type in (DOCKER_MANIFEST, OCI_MANIFEST) or not media_type:
        config = obj.get("config")
        if config is None:
            raise ManifestError("image manifest without config")
        return Manifest(
            digest,
            len(body),
            IMAGE,
            media_type or OCI_MANIFEST,
            config=_named(config, "config"),
            layers=_descriptors(obj, "layers"),
            subject=_named(obj["subject"], "subject") if obj.get("subject") else None,
            artifact_type=str(obj.get("artifactType") or ""),
        )
    raise ManifestError(f"unrecognized manifest content type {media_type!r}")


def parse_created(body: bytes) -> str | None:
    """The ``created`` timestamp of an image config, if it has one."""
    try:
        obj = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return None
    created = obj.get("created") if isinstance(obj, dict) else None
    return created if isinstance(created, str) else None
