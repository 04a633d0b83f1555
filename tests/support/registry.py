"""Harness around the real ``docker-registry`` program (CNCF distribution 2.8).

Standard library only. It writes a registry configuration for the filesystem driver, runs
``docker-registry serve`` on 127.0.0.1, talks to it over the HTTP API with a tiny urllib client,
runs ``docker-registry garbage-collect`` and parses its output, and builds small deterministic
manifests with real Docker and OCI media types.

Every network request made here goes to the registry process this module started itself on
127.0.0.1; HTTP proxies from the environment are ignored and redirects are never followed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from email.message import Message
from pathlib import Path
from types import TracebackType
from typing import Any

REGISTRY_BIN = "docker-registry"
LOOPBACK = "127.0.0.1"
START_TIMEOUT = 15.0
GC_TIMEOUT = 120.0
HTTP_TIMEOUT = 30.0

# --- media types ----------------------------------------------------------------------------

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
OCI_EMPTY_DATA = b"{}"

MANIFEST_MEDIA_TYPES: tuple[str, ...] = (
    OCI_INDEX,
    OCI_MANIFEST,
    DOCKER_MANIFEST_LIST,
    DOCKER_MANIFEST,
)

JSONDict = dict[str, Any]


# --- small helpers --------------------------------------------------------------------------


def registry_available() -> bool:
    """True when the ``docker-registry`` program is on PATH."""
    return shutil.which(REGISTRY_BIN) is not None


def registry_version() -> str:
    """The first line of ``docker-registry --version`` (e.g. ``... 2.8.2+ds1``)."""
    out = subprocess.run(
        [REGISTRY_BIN, "--version"], capture_output=True, text=True, timeout=30, check=True
    )
    return out.stdout.strip().splitlines()[0] if out.stdout.strip() else ""


def sha256_digest(data: bytes) -> str:
    """The canonical ``sha256:<hex>`` digest of ``data``."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def blob_bytes(seed: str, size: int) -> bytes:
    """Deterministic pseudo-random bytes of exactly ``size`` bytes (sha256 in counter mode)."""
    if size < 0:
        raise ValueError("size must be >= 0")
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}\x00{counter}".encode()).digest()
        counter += 1
    return bytes(out[:size])


def descriptor(
    media_type: str,
    data_or_digest: bytes | str,
    size: int | None = None,
    *,
    platform: dict[str, str] | None = None,
    artifact_type: str | None = None,
    annotations: dict[str, str] | None = None,
) -> JSONDict:
    """An OCI/Docker content descriptor.

    Given bytes, the digest and size are computed from them (``size`` must then be None or
    equal). Given a digest string, ``size`` is required.
    """
    if isinstance(data_or_digest, bytes):
        digest = sha256_digest(data_or_digest)
        if size is not None and size != len(data_or_digest):
            raise ValueError(f"size {size} does not match data length {len(data_or_digest)}")
        size = len(data_or_digest)
    else:
        digest = data_or_digest
        if size is None:
            raise ValueError("size is required when a digest is given")
    desc: JSONDict = {"mediaType": media_type, "digest": digest, "size": size}
    if artifact_type is not None:
        desc["artifactType"] = artifact_type
    if platform is not None:
        desc["platform"] = dict(platform)
    if annotations is not None:
        desc["annotations"] = dict(annotations)
    return desc


def json_bytes(obj: Any) -> bytes:
    """Stable, pretty JSON bytes (3-space indent like the docker CLI, key order as given)."""
    return json.dumps(obj, indent=3, ensure_ascii=True).encode("utf-8")


def compact_json_bytes(obj: Any) -> bytes:
    """Stable, compact JSON bytes (key order as given, no whitespace)."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=True).encode("utf-8")


def image_config(
    *,
    architecture: str,
    diff_ids: list[str],
    created: str = "2024-01-01T00:00:00Z",
    cmd: list[str] | None = None,
    size: int | None = None,
) -> bytes:
    """A small image configuration (Docker and OCI share the format), compact JSON.

    With ``size`` the JSON is padded to exactly that many bytes through a history comment.
    """
    history: list[JSONDict] = [{"created": created, "created_by": "storscan fixture"}]
    config: JSONDict = {
        "architecture": architecture,
        "os": "linux",
        "created": created,
        "config": {"Cmd": cmd if cmd is not None else ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": list(diff_ids)},
        "history": history,
    }
    data = compact_json_bytes(config)
    if size is None:
        return data
    history[0]["comment"] = ""
    base = len(compact_json_bytes(config))
    if base > size:
        raise ValueError(f"config needs at least {base} bytes, asked for {size}")
    history[0]["comment"] = "x" * (size - base)
    data = compact_json_bytes(config)
    assert len(data) == size
    return data


def image_manifest(
    config: JSONDict,
    layers: list[JSONDict],
    *,
    oci: bool,
    subject: JSONDict | None = None,
    artifact_type: str | None = None,
    annotations: dict[str, str] | None = None,
) -> bytes:
    """A Docker schema2 (``oci=False``) or OCI image manifest as stable bytes."""
    if not oci and (subject is not None or artifact_type is not None):
        raise ValueError("subject/artifactType only exist in OCI manifests")
    body: JSONDict = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST if oci else DOCKER_MANIFEST,
    }
    if artifact_type is not None:
        body["artifactType"] = artifact_type
    body["config"] = config
    body["layers"] = layers
    if subject is not None:
        body["subject"] = subject
    if annotations is not None:
        body["annotations"] = dict(annotations)
    return json_bytes(body)


def index_manifest(manifests: list[JSONDict], *, oci: bool) -> bytes:
    """An OCI image index (``oci=True``) or a Docker manifest list as stable bytes."""
    body: JSONDict = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX if oci else DOCKER_MANIFEST_LIST,
        "manifests": manifests,
    }
    return json_bytes(body)


# --- configuration --------------------------------------------------------------------------


def _yaml_str(value: str) -> str:
    # A JSON string literal is a valid YAML double-quoted scalar.
    return json.dumps(value)


def write_config(
    root: Path,
    config_path: Path,
    port: int,
    *,
    delete_enabled: bool = True,
    readonly: bool = False,
) -> None:
    """Write a distribution 2.8 configuration: filesystem driver on ``root``, 127.0.0.1:port.

    There is deliberately no ``storage.cache`` block, so no blob-descriptor cache is used, and
    upload purging is off so that unfinished uploads stay on disk.
    """
    lines = [
        "version: 0.1",
        "log:",
        "  level: warn",
        "  formatter: text",
        "  accesslog:",
        "    disabled: true",
        "storage:",
        "  filesystem:",
        f"    rootdirectory: {_yaml_str(str(root))}",
        "  delete:",
        f"    enabled: {'true' if delete_enabled else 'false'}",
        "  maintenance:",
        "    uploadpurging:",
        "      enabled: false",
        "    readonly:",
        f"      enabled: {'true' if readonly else 'false'}",
        "http:",
        f"  addr: {_yaml_str(f'{LOOPBACK}:{port}')}",
        "  secret: storscan-test-secret",
        "health:",
        "  storagedriver:",
        "    enabled: false",
        "",
    ]
    config_path.parent.mkdir(parents=True, exist_ok=True)
    config_path.write_text("\n".join(lines), encoding="utf-8")


def _child_env() -> dict[str, str]:
    # REGISTRY_* variables would override the configuration file; drop them.
    return {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}


# --- garbage collection ---------------------------------------------------------------------

_DIGEST = r"sha[0-9]+:[0-9a-f]+"
_ELIGIBLE_BLOB = re.compile(rf"^blob eligible for deletion: ({_DIGEST})\s*$")
_ELIGIBLE_MANIFEST = re.compile(rf"^manifest eligible for deletion: ({_DIGEST})\s*$")
_MARKING = re.compile(rf"^\S+: marking (?:manifest|blob) ({_DIGEST})\s*$")
_SUMMARY = re.compile(
    r"^(\d+) blobs marked, (\d+) blobs and (\d+) manifests eligible for deletion\s*$"
)


@dataclass
class GCResult:
    """Outcome of one ``docker-registry garbage-collect`` run, with its stdout parsed."""

    returncode: int
    stdout: str
    stderr: str
    eligible_blobs: set[str] = field(default_factory=set)
    eligible_manifests: set[str] = field(default_factory=set)
    marked: set[str] = field(default_factory=set)
    summary: tuple[int, int, int] | None = None  # (marked, blobs eligible, manifests eligible)


def parse_gc_output(returncode: int, stdout: str, stderr: str) -> GCResult:
    """Parse the stdout of distribution 2.8's garbage-collect."""
    result = GCResult(returncode=returncode, stdout=stdout, stderr=stderr)
    for line in stdout.splitlines():
        if m := _ELIGIBLE_BLOB.match(line):
            result.eligible_blobs.add(m.group(1))
        elif m := _ELIGIBLE_MANIFEST.match(line):
            result.eligible_manifests.add(m.group(1))
        elif m := _MARKING.match(line):
            result.marked.add(m.group(1))
        elif m := _SUMMARY.match(line):
            result.summary = (int(m.group(1)), int(m.group(2)), int(m.group(3)))
    return result


def garbage_collect(
    config_path: Path, *, dry_run: bool = True, delete_untagged: bool = False
) -> GCResult:
    """Run ``docker-registry garbage-collect`` on a configuration file (dry-run by default)."""
    cmd = [REGISTRY_BIN, "garbage-collect", str(config_path)]
    if dry_run:
        cmd.append("--dry-run")
    if delete_untagged:
        cmd.append("--delete-untagged")
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=GC_TIMEOUT, env=_child_env(), check=False
    )
    return parse_gc_output(proc.returncode, proc.stdout, proc.stderr)


# --- HTTP client ----------------------------------------------------------------------------


class RegistryError(RuntimeError):
    """An unexpected HTTP answer from the registry."""

    def __init__(self, method: str, url: str, status: int, body: bytes) -> None:
        text = body[:500].decode("utf-8", "replace")
        super().__init__(f"{method} {url} -> HTTP {status}: {text}")
        self.status = status
        self.body = body


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: Any,
        code: int,
        msg: str,
        headers: Message,
        newurl: str,
    ) -> urllib.request.Request | None:
        return None


@dataclass
class Response:
    status: int
    headers: Message
    body: bytes

    def header(self, name: str) -> str:
        value = self.headers.get(name)
        return "" if value is None else str(value)


_LINK_NEXT = re.compile(r'<([^>]+)>\s*;\s*rel="?next"?')


class Client:
    """A tiny client for the registry HTTP API v2 (only what the tests and fixtures need)."""

    def __init__(self, base_url: str) -> None:
        parsed = urllib.parse.urlsplit(base_url)
        if parsed.scheme != "http" or parsed.hostname != LOOPBACK:
            raise ValueError(f"only http://{LOOPBACK}:PORT registries are allowed: {base_url}")
        self.base_url = base_url.rstrip("/")
        # No proxies (env proxies must never see this traffic) and no redirects.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())

    def _url(self, path_or_url: str) -> str:
        url = urllib.parse.urljoin(self.base_url + "/", path_or_url)
        if not url.startswith(self.base_url + "/"):
            raise ValueError(f"refusing to leave {self.base_url}: {url}")
        return url

    def request(
        self,
        method: str,
        path_or_url: str,
        *,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        """One HTTP request; returns the response whatever its status."""
        url = self._url(path_or_url)
        req = urllib.request.Request(url, data=body, method=method, headers=dict(headers or {}))
        if body is not None and not req.has_header("Content-type"):
            req.add_header("Content-Type", "application/octet-stream")
        try:
            with self._opener.open(req, timeout=HTTP_TIMEOUT) as resp:
                return Response(resp.status, resp.headers, resp.read())
        except urllib.error.HTTPError as err:
            with err:
                return Response(err.code, err.headers, err.read())

    def _expect(
        self,
        method: str,
        path_or_url: str,
        status: int,
        *,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        resp = self.request(method, path_or_url, body=body, headers=headers)
        if resp.status != status:
            raise RegistryError(method, self._url(path_or_url), resp.status, resp.body)
        return resp

    @staticmethod
    def _with_query(url: str, **params: str) -> str:
        sep = "&" if "?" in url else "?"
        return url + sep + urllib.parse.urlencode(params)

    def ping(self) -> int:
        """Status of ``GET /v2/``."""
        return self.request("GET", "/v2/").status

    # blobs

    def push_blob(self, repo: str, data: bytes) -> str:
        """Monolithic upload: POST then PUT ?digest=; returns the digest."""
        digest = sha256_digest(data)
        resp = self._expect("POST", f"/v2/{repo}/blobs/uploads/", 202)
        location = resp.header("Location")
        put = self._expect("PUT", self._with_query(location, digest=digest), 201, body=data)
        got = put.header("Docker-Content-Digest")
        if got != digest:
            raise RuntimeError(f"registry answered digest {got!r}, expected {digest}")
        return digest

    def mount_blob(self, repo: str, digest: str, from_repo: str) -> None:
        """Cross-repository mount; anything but 201 is an error."""
        query = urllib.parse.urlencode({"mount": digest, "from": from_repo})
        resp = self.request("POST", f"/v2/{repo}/blobs/uploads/?{query}")
        if resp.status != 201:
            # A 202 means the registry opened an upload instead of mounting.
            raise RegistryError(
                "POST", f"/v2/{repo}/blobs/uploads/?{query}", resp.status, resp.body
            )

    def start_upload(self, repo: str, chunk: bytes) -> str:
        """Start an upload and send one chunk; it is never completed. Returns the upload UUID."""
        resp = self._expect("POST", f"/v2/{repo}/blobs/uploads/", 202)
        location = resp.header("Location")
        patch = self._expect("PATCH", location, 202, body=chunk)
        uuid = patch.header("Docker-Upload-UUID") or resp.header("Docker-Upload-UUID")
        if not uuid:
            raise RuntimeError("registry did not return Docker-Upload-UUID")
        return uuid

    def get_blob(self, repo: str, digest: str) -> bytes:
        return self._expect("GET", f"/v2/{repo}/blobs/{digest}", 200).body

    def blob_status(self, repo: str, digest: str) -> int:
        return self.request("HEAD", f"/v2/{repo}/blobs/{digest}").status

    # manifests

    def put_manifest(self, repo: str, ref: str, body: bytes, media_type: str) -> str:
        """PUT a manifest by tag or digest; returns the Docker-Content-Digest."""
        resp = self._expect(
            "PUT",
            f"/v2/{repo}/manifests/{ref}",
            201,
            body=body,
            headers={"Content-Type": media_type},
        )
        digest = resp.header("Docker-Content-Digest")
        if digest != sha256_digest(body):
            raise RuntimeError(
                f"registry answered digest {digest!r}, expected {sha256_digest(body)}"
            )
        return digest

    def get_manifest(
        self, repo: str, ref: str, accept: list[str] | None = None
    ) -> tuple[bytes, str]:
        """GET a manifest; returns (body, Docker-Content-Digest). Raises on non-200."""
        types = list(MANIFEST_MEDIA_TYPES) if accept is None else accept
        resp = self._expect(
            "GET", f"/v2/{repo}/manifests/{ref}", 200, headers={"Accept": ", ".join(types)}
        )
        return resp.body, resp.header("Docker-Content-Digest")

    def manifest_status(self, repo: str, ref: str) -> int:
        """Status of a HEAD on the manifest (all manifest media types accepted)."""
        headers = {"Accept": ", ".join(MANIFEST_MEDIA_TYPES)}
        return self.request("HEAD", f"/v2/{repo}/manifests/{ref}", headers=headers).status

    def delete_manifest(self, repo: str, digest: str) -> None:
        self._expect("DELETE", f"/v2/{repo}/manifests/{digest}", 202)

    # listings

    def _paged(self, first: str, key: str) -> list[str]:
        out: list[str] = []
        url: str | None = first
        while url is not None:
            resp = self._expect("GET", url, 200)
            out.extend(json.loads(resp.body).get(key) or [])
            m = _LINK_NEXT.search(resp.header("Link"))
            url = m.group(1) if m else None
        return out

    def catalog(self, *, page_size: int = 1000) -> list[str]:
        """All repositories, following ``Link: <...>; rel="next"`` pagination."""
        return self._paged(f"/v2/_catalog?n={page_size}", "repositories")

    def tags(self, repo: str) -> list[str]:
        """All tags of a repository (following pagination if the server paginates)."""
        return self._paged(f"/v2/{repo}/tags/list", "tags")


# --- the registry process -------------------------------------------------------------------


class Registry:
    """``docker-registry serve`` on 127.0.0.1 with a filesystem storage root (context manager).

    The configuration file and the process log live next to the storage root (never inside it),
    at ``<root>.registry.yml`` and ``<root>.registry.log`` unless ``config_path`` is given.
    """

    def __init__(
        self,
        root: Path,
        *,
        delete_enabled: bool = True,
        readonly: bool = False,
        config_path: Path | None = None,
    ) -> None:
        self.root = Path(root).absolute()
        self.delete_enabled = delete_enabled
        self.readonly = readonly
        self.config_path = (
            Path(config_path).absolute()
            if config_path is not None
            else self.root.parent / f"{self.root.name}.registry.yml"
        )
        self.log_path = self.config_path.with_suffix(".log")
        self.port = free_port()
        self.url = f"http://{LOOPBACK}:{self.port}"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def _spawn(self) -> subprocess.Popen[bytes]:
        write_config(
            self.root,
            self.config_path,
            self.port,
            delete_enabled=self.delete_enabled,
            readonly=self.readonly,
        )
        with self.log_path.open("wb") as log:
            return subprocess.Popen(
                [REGISTRY_BIN, "serve", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=_child_env(),
            )

    def _wait_ready(self, proc: subprocess.Popen[bytes]) -> bool:
        """True once GET /v2/ answers 200; False if the process died first."""
        client = Client(self.url)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return False
            try:
                if client.ping() == 200:
                    return True
            except OSError:
                pass
            time.sleep(0.05)
        self._terminate(proc)
        raise RuntimeError(
            f"registry did not answer GET /v2/ within {START_TIMEOUT} s; log:\n{self.log_text()}"
        )

    def start(self) -> None:
        """Start the registry and wait (bounded) until ``GET /v2/`` answers 200."""
        if self._proc is not None:
            raise RuntimeError("registry already started")
        if not registry_available():
            raise RuntimeError(f"{REGISTRY_BIN} is not on PATH")
        self.root.mkdir(parents=True, exist_ok=True)
        for _attempt in range(3):
            proc = self._spawn()
            if self._wait_ready(proc):
                self._proc = proc
                return
            log = self.log_text()
            if "address already in use" not in log:
                raise RuntimeError(
                    f"registry exited with code {proc.returncode} before answering; log:\n{log}"
                )
            self.port = free_port()  # lost a race for the port: try another one
            self.url = f"http://{LOOPBACK}:{self.port}"
        raise RuntimeError(f"registry could not bind a port; log:\n{self.log_text()}")

    @staticmethod
    def _terminate(proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)

    def stop(self) -> None:
        """Stop the registry process this object started (by its own pid)."""
        proc, self._proc = self._proc, None
        if proc is not None:
            self._terminate(proc)

    def client(self) -> Client:
        return Client(self.url)

    def __enter__(self) -> Registry:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
