"""The blob store's contract, held by both backends: a local folder and an S3 bucket on a real
S3 API server (moto over HTTP, harness/s3_server.py; not a mocked client)."""

from __future__ import annotations

import hashlib
import itertools
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness import REPO
from ops.redis_server import free_port
from store.blobs import (
    Entry,
    LocalStore,
    Store,
    StoreError,
    blob_hashes,
    blob_key,
    get_blob,
    open_store,
    put_blob,
)
from store.s3 import S3Store

BACKENDS = ["local", "s3"]


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    """An empty store of each backend."""
    if request.param == "local":
        return LocalStore(tmp_path / "store")
    env = request.getfixturevalue("s3_env")
    return open_store(env["STORE_URL"])


def keys(store: Store, prefix: str = "") -> set[str]:
    return {entry.key for entry in store.list(prefix)}


def test_put_get_exists_delete(store: Store) -> None:
    """A written key reads back byte for byte; a deleted one is gone, and deleting it again is
    no error."""
    data = bytes(range(256)) * 40
    assert not store.exists("registry/active.json")
    store.put("registry/active.json", data)
    assert store.exists("registry/active.json")
    assert store.get("registry/active.json") == data
    store.delete("registry/active.json")
    store.delete("registry/active.json")
    assert not store.exists("registry/active.json")
    with pytest.raises(StoreError) as missing:
        store.get("registry/active.json")
    assert missing.value.code == "store_missing"
    assert missing.value.key == "registry/active.json"


def test_overwrite_replaces_whole(store: Store) -> None:
    """A put over an existing key leaves only the new bytes, shorter or not."""
    store.put("feedback/p1.json", b"a much longer first version")
    store.put("feedback/p1.json", b"short")
    assert store.get("feedback/p1.json") == b"short"
    assert [(e.key, e.size) for e in store.list("feedback/")] == [("feedback/p1.json", 5)]


def test_list_by_prefix(store: Store) -> None:
    """list(prefix) gives exactly the keys starting with it (a plain string prefix, so "a"
    also matches "ab/..."), with their sizes and recent, timezone-aware write times."""
    contents = {"a/1": b"x", "a/2/deep": b"yy", "ab/3": b"zzz", "b/4": b""}
    for key, data in contents.items():
        store.put(key, data)
    assert keys(store) == set(contents)
    assert keys(store, "a/") == {"a/1", "a/2/deep"}
    assert keys(store, "a") == {"a/1", "a/2/deep", "ab/3"}
    assert keys(store, "c") == set()
    now = datetime.now(UTC)
    for entry in store.list():
        assert entry.size == len(contents[entry.key])
        assert abs(entry.modified - now) < timedelta(minutes=5)


def test_missing_key(store: Store) -> None:
    """A key never written is missing, not an empty value or another error."""
    with pytest.raises(StoreError) as error:
        store.get("blobs/00/never-written")
    assert error.value.code == "store_missing"
    assert "missing" in str(error.value)


def test_concurrent_puts_are_whole(store: Store) -> None:
    """Threads sharing one store (as the worker's pool does) overwrite a key while others read
    it: every read is one whole version, never a mix or a part."""
    versions = [bytes([n]) * 256 * 1024 for n in range(4)]
    store.put("registry/active.json", versions[0])

    def write(n: int) -> None:
        for _ in range(8):
            store.put("registry/active.json", versions[n])

    def read(_: int) -> set[bytes]:
        return {store.get("registry/active.json") for _ in range(16)}

    with ThreadPoolExecutor(8) as pool:
        writers = [pool.submit(write, n) for n in range(4)]
        seen = set().union(*pool.map(read, range(4)))
        for writer in writers:
            writer.result()
    assert seen <= set(versions)
    assert store.get("registry/active.json") in versions


class CountingStore:
    """A real store that counts the puts that reach it."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.url = inner.url
        self.puts = 0

    def put(self, key: str, data: bytes) -> None:
        self.puts += 1
        self.inner.put(key, data)

    def get(self, key: str) -> bytes:
        return self.inner.get(key)

    def exists(self, key: str) -> bool:
        return self.inner.exists(key)

    def delete(self, key: str) -> None:
        self.inner.delete(key)

    def list(self, prefix: str = "") -> Iterator[Entry]:
        return self.inner.list(prefix)


def test_put_blob_keeps_content_once(store: Store) -> None:
    """The same bytes put twice are written once, under their SHA-256; other bytes get their
    own blob."""
    counting = CountingStore(store)
    photo = b"\xff\xd8 a photo's bytes" * 100
    sha = put_blob(counting, photo)
    assert sha == hashlib.sha256(photo).hexdigest()
    assert put_blob(counting, photo) == sha
    assert counting.puts == 1
    other = put_blob(counting, photo + b"!")
    assert counting.puts == 2
    assert get_blob(store, sha) == photo
    assert {e.key for e in blob_hashes(store)} == {sha, other}
    assert keys(store) == {blob_key(sha), blob_key(other)}


def test_get_blob_damaged(store: Store) -> None:
    """A blob whose stored bytes no longer match its hash is reported damaged, not returned."""
    sha = put_blob(store, b"the original bytes")
    store.put(blob_key(sha), b"the original bytez")
    with pytest.raises(StoreError) as error:
        get_blob(store, sha)
    assert error.value.code == "store_damaged"
    assert sha in str(error.value)


def test_get_blob_missing(store: Store) -> None:
    """A blob never stored (or pruned) is missing."""
    sha = hashlib.sha256(b"never stored").hexdigest()
    with pytest.raises(StoreError) as error:
        get_blob(store, sha)
    assert (error.value.code, error.value.key) == ("store_missing", blob_key(sha))


EXAMPLES = itertools.count()
SEGMENT = st.text("abcXYZ019_-", min_size=1, max_size=8).flatmap(
    lambda head: st.text("abc.-_", max_size=4).map(lambda tail: head + tail)
)


@settings(
    max_examples=30,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(key=st.lists(SEGMENT, min_size=1, max_size=4).map("/".join), data=st.binary(max_size=64))
def test_any_key_round_trips(store: Store, key: str, data: bytes) -> None:
    """Keys of the shapes breedbot writes (`/`-separated names with dots, dashes, digits) read
    back and list as written, in both backends."""
    # Each example under its own folder: in a folder, "a" cannot be a file and hold "a/b" too.
    key = f"{next(EXAMPLES)}/{key}"
    store.put(key, data)
    assert store.get(key) == data
    assert key in keys(store, key)


def test_s3_url_and_prefixes_isolate(s3_env: dict[str, str]) -> None:
    """`s3://bucket/prefix` opens an S3Store keeping its keys under the prefix: two prefixes in
    one bucket never see each other's keys."""
    bucket = s3_env["STORE_URL"].removeprefix("s3://").split("/")[0]
    first = open_store(f"s3://{bucket}/host-a/")
    second = open_store(f"s3://{bucket}/host-b")
    assert isinstance(first, S3Store)
    assert (first.url, second.url) == (f"s3://{bucket}/host-a", f"s3://{bucket}/host-b")
    first.put("k", b"1")
    second.put("k", b"2")
    assert (first.get("k"), second.get("k")) == (b"1", b"2")
    assert keys(first) == keys(second) == {"k"}
    assert keys(open_store(f"s3://{bucket}")) >= {"host-a/k", "host-b/k"}


def test_s3_env_points_another_process_at_the_bucket(s3_env: dict[str, str]) -> None:
    """A process started with `s3_env` (as a worker is) opens the same bucket through its
    settings: STORE_URL for the store, boto3's AWS_* for the endpoint and keys."""
    open_store(s3_env["STORE_URL"]).put("feedback/p1.json", b'{"label": "pug"}')
    code = (
        "from worker.settings import get_settings; from worker.storage import blob_store; "
        "s = blob_store(get_settings()); "
        "print(s.url, s.get('feedback/p1.json').decode()); s.put('from-child', b'hi')"
    )
    env = {**os.environ, **s3_env, "PYTHONPATH": str(REPO)}
    child = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert child.returncode == 0, child.stderr
    assert child.stdout.split() == [s3_env["STORE_URL"], '{"label":', '"pug"}']
    assert open_store(s3_env["STORE_URL"]).get("from-child") == b"hi"


def test_s3_missing_bucket_says_so(s3_env: dict[str, str]) -> None:
    """A bucket that does not exist is a clear error naming it (the store never creates one)."""
    store = open_store("s3://no-such-bucket-here/x")
    with pytest.raises(StoreError) as error:
        store.put("k", b"v")
    assert error.value.code == "store_unreachable"
    assert "'no-such-bucket-here' does not exist" in str(error.value)


def test_s3_unreachable_fails_fast(s3_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """An endpoint nobody listens on: every operation fails as "unreachable" naming the store,
    in seconds (a dead S3 must not hang a worker for the SDK's default minutes)."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    store = open_store(s3_env["STORE_URL"])
    operations = {
        "get": lambda: store.get("k"),
        "put": lambda: store.put("k", b"v"),
        "exists": lambda: store.exists("k"),
        "delete": lambda: store.delete("k"),
        "list": lambda: list(store.list("registry/")),
    }
    for name, operation in operations.items():
        started = time.monotonic()
        with pytest.raises(StoreError) as error:
            operation()
        # Not a speed figure: a bound far above the ~0.1 s a refused connection takes, and far
        # below boto3's defaults (60 s timeouts, several attempts).
        assert time.monotonic() - started < 20, name
        assert error.value.code == "store_unreachable", name
        assert store.url in str(error.value), name
