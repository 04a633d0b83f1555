"""Path grammar of the distribution v2 storage layout (filesystem driver).

Everything here is pure string handling: no I/O. Paths are relative to the ``v2`` directory
(``<root>/docker/registry/v2``) and use ``/`` as the separator.
"""

from __future__ import annotations

import re

V2_PARTS = ("docker", "registry", "v2")
REPOSITORIES = "repositories"
BLOBS = "blobs"

MANIFESTS = "_manifests"
LAYERS = "_layers"
UPLOADS = "_uploads"
MARKERS = (MANIFESTS, LAYERS, UPLOADS)

# Algorithms go-digest accepts, with the hex length of each.
HEX_LENGTHS = {"sha256": 64, "sha384": 96, "sha512": 128}
CANONICAL_ALG = "sha256"
LINK_SIZE = len("sha256:") + 64  # a sha256 link file holds exactly this many bytes

_HEX = {alg: re.compile(f"[0-9a-f]{{{n}}}") for alg, n in HEX_LENGTHS.items()}
_DIGEST = re.compile("|".join(f"{alg}:[0-9a-f]{{{n}}}" for alg, n in HEX_LENGTHS.items()))

# Repository path component grammar (distribution/reference): lowercase alphanumeric runs
# joined by '.', '_', '__' or one or more '-'. A first component may also be a domain.
_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_DOMAIN = re.compile(
    r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*"
    r"|\[[0-9a-fA-F:]+\])(?::[0-9]+)?"
)
TAG_RE = re.compile(r"[\w][\w.-]{0,127}")
# Tags that OCI/cosign tooling derives from a manifest digest: sha256-<hex>[.sig|.att|.sbom]
SIGNATURE_TAG_RE = re.compile(r"(sha256|sha384|sha512)-([0-9a-f]{64,128})(?:\.[a-z]+)?")


def is_hex_name(name: str, alg: str) -> bool:
    """True when ``name`` is a valid encoded digest for ``alg``."""
    pattern = _HEX.get(alg)
    return pattern is not None and pattern.fullmatch(name) is not None


def parse_digest(text: str) -> str | None:
    """Return ``text`` when it is a valid digest string exactly, else None."""
    return text if _DIGEST.fullmatch(text) is not None else None


def classify_link(content: bytes) -> tuple[str | None, str | None]:
    """Classify a link file's bytes as the registry would read them.

    Returns ``(digest, problem)``: digest is set when the content parses byte-exactly,
    problem is one of ``empty``, ``trailing_newline``, ``malformed`` otherwise.
    """
    if not content:
        return None, "empty"
    try:
        text = content.decode("ascii")
    except UnicodeDecodeError:
        return None, "malformed"
    if parse_digest(text) is not None:
        return text, None
    if text != text.rstrip() and parse_digest(text.rstrip()) is not None:
        return None, "trailing_newline"
    return None, "malformed"


def valid_repository_name(name: str) -> bool:
    """True when the registry's reference grammar accepts ``name`` (it aborts GC otherwise)."""
    if not name or len(name) > 255:
        return False
    parts = name.split("/")
    if len(parts) > 1 and _COMPONENT.fullmatch(parts[0]) is None:
        if _DOMAIN.fullmatch(parts[0]) is None:
            return False
        parts = parts[1:]
    return all(_COMPONENT.fullmatch(p) is not None for p in parts)


def split_digest(digest: str) -> tuple[str, str]:
    """``sha256:abc`` -> (``sha256``, ``abc``)."""
    alg, _, hexpart = digest.partition(":")
    return alg, hexpart


def blob_dir(digest: str) -> str:
    """The directory the registry's GC deletes for a blob."""
    alg, hexpart = split_digest(digest)
    return f"{BLOBS}/{alg}/{hexpart[:2]}/{hexpart}"


def blob_data(digest: str) -> str:
    """The ``data`` file of a blob."""
    return blob_dir(digest) + "/data"


def repo_dir(repo: str) -> str:
    return f"{REPOSITORIES}/{repo}"


def revision_dir(repo: str, digest: str) -> str:
    alg, hexpart = split_digest(digest)
    return f"{REPOSITORIES}/{repo}/{MANIFESTS}/revisions/{alg}/{hexpart}"


def tag_dir(repo: str, tag: str) -> str:
    return f"{REPOSITORIES}/{repo}/{MANIFESTS}/tags/{tag}"


def tag_current_link(repo: str, tag: str) -> str:
    return tag_dir(repo, tag) + "/current/link"


def tag_index_dir(repo: str, tag: str, digest: str) -> str:
    alg, hexpart = split_digest(digest)
    return f"{tag_dir(repo, tag)}/index/{alg}/{hexpart}"


def layer_link(repo: str, digest: str) -> str:
    alg, hexpart = split_digest(digest)
    return f"{REPOSITORIES}/{repo}/{LAYERS}/{alg}/{hexpart}/link"


def upload_dir(repo: str, upload_id: str) -> str:
    return f"{REPOSITORIES}/{repo}/{UPLOADS}/{upload_id}"


def signature_tag_subject(tag: str) -> str | None:
    """The manifest digest a ``sha256-<hex>[.sig]`` style tag is named after, if any."""
    m = SIGNATURE_TAG_RE.fullmatch(tag)
    if m is None or len(m.group(2)) != HEX_LENGTHS[m.group(1)]:
        return None
    return f"{m.group(1)}:{m.group(2)}"
