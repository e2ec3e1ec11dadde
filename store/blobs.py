"""Blobs by key in a local folder or an S3-compatible bucket, and content-addressed by SHA-256.

`open_store(url)` picks the backend: a path or `file://` URL is a folder (the single-host
default), `s3://bucket/prefix` a bucket (endpoint and credentials from boto3's usual environment:
AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...). Keys are `/`-separated; a put is atomic in both.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import ClassVar, Protocol
from urllib.parse import urlparse

from model.problems import Problem

BLOBS = "blobs/"


class StoreError(Problem, RuntimeError):
    """A blob that is missing, damaged or unreachable: code store_missing, _damaged or
    _unreachable (the short name is accepted too)."""

    messages: ClassVar[dict[str, str]] = {
        "store_missing": "{key} is missing from the blob store",
        "store_damaged": "{key} is damaged in the blob store (its content does not match its hash)",
        "store_unreachable": "the blob store could not be reached for {key}: {why}",
    }

    def __init__(self, code: str, key: str, why: str = "") -> None:
        code = code if code.startswith("store_") else f"store_{code}"
        super().__init__(code, key=key, **({"why": why} if why else {}))
        self.key = key


@dataclass(frozen=True)
class Entry:
    """A listed key, its size and when it was last written."""

    key: str
    size: int
    modified: datetime


class Store(Protocol):
    """The few operations breedbot needs of a blob store."""

    url: str

    def put(self, key: str, data: bytes) -> None:
        """Write `data` under `key`, whole or not at all."""

    def get(self, key: str) -> bytes:
        """The bytes under `key`; StoreError("missing") if there are none."""

    def exists(self, key: str) -> bool:
        """Whether `key` holds anything."""

    def delete(self, key: str) -> None:
        """Remove `key`; no error when it is already gone."""

    def list(self, prefix: str = "") -> Iterator[Entry]:
        """Every key starting with `prefix`."""


class LocalStore:
    """A folder: a key is a relative path, written to a temporary file and renamed into place."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.url = f"file://{self.root}"

    def _path(self, key: str) -> Path:
        parts = key.split("/")
        if not key or any(p in {"", ".", ".."} or p.startswith(".") for p in parts):
            raise ValueError(f"bad store key {key!r}")
        return self.root.joinpath(*parts)

    def _folder(self, folder: Path) -> None:
        """Make `folder` and any missing parent up to the root, each 0700."""
        if folder.is_dir():
            return
        if folder == self.root:
            folder.parent.mkdir(parents=True, exist_ok=True)
        else:
            self._folder(folder.parent)
        folder.mkdir(mode=0o700, exist_ok=True)
        folder.chmod(0o700)  # mkdir's mode passes through the umask

    def put(self, key: str, data: bytes) -> None:
        """Write `data` under `key`, whole or not at all; files 0600, folders 0700 (photos)."""
        path = self._path(key)
        self._folder(path.parent)
        # mkstemp creates the file 0600, so it stays private when renamed into place.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def get(self, key: str) -> bytes:
        """The bytes under `key`; StoreError("missing") if there are none."""
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise StoreError("missing", key) from None

    def exists(self, key: str) -> bool:
        """Whether `key` holds anything."""
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        """Remove `key`; no error when it is already gone."""
        self._path(key).unlink(missing_ok=True)

    def list(self, prefix: str = "") -> Iterator[Entry]:
        """Every key starting with `prefix` (temporary files of unfinished puts excluded)."""
        if not self.root.is_dir():
            return
        for dirpath, _, names in os.walk(self.root):
            for name in names:
                if name.startswith("."):
                    continue
                path = Path(dirpath) / name
                key = path.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    st = path.stat()
                    yield Entry(key, st.st_size, datetime.fromtimestamp(st.st_mtime, UTC))


def open_store(url: str) -> Store:
    """The store a STORE_URL names: a folder path, `file:///path` or `s3://bucket/prefix`."""
    parsed = urlparse(str(url))
    if parsed.scheme == "s3":
        from store.s3 import S3Store  # boto3 only where a bucket is used

        return S3Store(parsed.netloc, parsed.path.strip("/"))
    if parsed.scheme in {"", "file"}:
        return LocalStore(Path(parsed.path if parsed.scheme else url))
    raise ValueError(f"STORE_URL must be a folder, file:// or s3:// URL, got {url!r}")


def blob_key(sha256: str) -> str:
    """Where the blob with this SHA-256 lives."""
    return f"{BLOBS}{sha256[:2]}/{sha256}"


def put_blob(store: Store, data: bytes) -> str:
    """Keep `data` once, under its SHA-256 (returned); an existing blob is not written again."""
    sha256 = hashlib.sha256(data).hexdigest()
    key = blob_key(sha256)
    if not store.exists(key):
        store.put(key, data)
    return sha256


def get_blob(store: Store, sha256: str) -> bytes:
    """A blob's bytes, checked against its hash: StoreError("damaged") if they differ."""
    key = blob_key(sha256)
    data = store.get(key)
    if hashlib.sha256(data).hexdigest() != sha256:
        raise StoreError("damaged", key)
    return data


def blob_hashes(store: Store) -> Iterator[Entry]:
    """Every stored blob; an entry's `key` is its SHA-256."""
    for entry in store.list(BLOBS):
        yield Entry(entry.key.rsplit("/", 1)[-1], entry.size, entry.modified)
