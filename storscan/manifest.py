"""Parse manifest blobs of every kind the registry stores, the way the registry reads them."""

from __future__ import annotations

import json
import sys
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


class ManifestError(ValueError):
    """The blob is not a manifest the registry can load."""


def _descriptor(obj: Any, where: str) -> Descriptor:
    if not isinstance(obj, dict):
        raise ManifestError(f"{where} is not an object")
    digest = obj.get("digest")
    if not isinstance(digest, str) or parse_digest(digest) is None:
        raise ManifestError(f"{where} has an invalid digest {digest!r}")
    size = obj.get("size", -1)
    if not isinstance(size, int) or isinstance(size, bool):
        raise ManifestError(f"{where} has an invalid size {size!r}")
    media_type = obj.get("mediaType") or ""
    if not isinstance(media_type, str):
        media_type = ""
    foreign = bool(obj.get("urls")) or "foreign" in media_type or "nondistributable" in media_type
    plat = obj.get("platform")
    platform = ""
    if isinstance(plat, dict):
        platform = "/".join(
            str(plat[k]) for k in ("os", "architecture", "variant") if isinstance(plat.get(k), str)
        )
    # Interned: the same digests and media types recur across a registry's manifests.
    return Descriptor(sys.intern(digest), size, sys.intern(media_type), foreign, platform)


def _descriptors(obj: Any, key: str) -> tuple[Descriptor, ...]:
    items = obj.get(key)
    if items is None:
        return ()
    if not isinstance(items, list):
        raise ManifestError(f"{key} is not a list")
    return tuple(_descriptor(item, f"{key}[{i}]") for i, item in enumerate(items))


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
            subject=_descriptor(obj["subject"], "subject") if obj.get("subject") else None,
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
            config=_descriptor(config, "config"),
            layers=_descriptors(obj, "layers"),
            subject=_descriptor(obj["subject"], "subject") if obj.get("subject") else None,
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
