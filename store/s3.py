"""The blob store in an S3-compatible bucket (AWS S3, MinIO, moto_server), through boto3.

Endpoint, credentials and region come from boto3's own environment (AWS_ENDPOINT_URL,
AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION, or its config files). The bucket
must exist: the store never creates one. A single PUT is atomic in S3, so a reader sees the
old object or the new one, never part of either.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC
from typing import TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from store.blobs import Entry, StoreError

T = TypeVar("T")

# A dead endpoint must fail a job in seconds, not hang a worker for the SDK's default minutes
# (60 s timeouts, several attempts): one retry, short connects. A read waits longer, since a
# version bundle is a few MB.
# Connections: as many as the worker's threads (WORKER_CONCURRENCY, 32 by default), not boto3's 10,
# past which urllib3 discards connections with a warning.
CLIENT_CONFIG = Config(
    connect_timeout=2,
    read_timeout=20,
    retries={"mode": "standard", "total_max_attempts": 2},
    max_pool_connections=32,
)
# A GET of a missing key answers an S3 error document; a HEAD has no body, only its status. A bare
# 404 to a GET is not S3 speaking (a wrong endpoint), so it is no "missing".
GET_MISSING = frozenset({"NoSuchKey"})
HEAD_MISSING = frozenset({"NoSuchKey", "404", "NotFound"})


class S3Store:
    """Keys under `prefix/` in `bucket`; `url` is `s3://bucket/prefix`."""

    def __init__(self, bucket: str, prefix: str = "") -> None:
        if not bucket:
            raise ValueError("an s3:// STORE_URL needs a bucket: s3://bucket/prefix")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.url = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        # Clients are thread-safe (a session is not): one per store, shared by the threads pool.
        self.client = boto3.session.Session().client("s3", config=CLIENT_CONFIG)

    def _key(self, key: str) -> str:
        if not key:
            raise ValueError("bad store key ''")
        return f"{self.prefix}/{key}" if self.prefix else key

    def _call(self, key: str, request: Callable[[], T], missing: frozenset[str] = GET_MISSING) -> T:
        """Run one request, its failures turned into StoreError (`missing`: the error codes
        that mean the key is not there)."""
        try:
            return request()
        except ClientError as error:
            code = str(error.response.get("Error", {}).get("Code", ""))
            if code in missing:
                raise StoreError("missing", key) from None
            if code == "NoSuchBucket":
                why = f"bucket {self.bucket!r} does not exist (create it: the store never does)"
                raise StoreError("unreachable", key, why) from None
            raise StoreError("unreachable", key, f"{self.url}: {error}") from None
        except BotoCoreError as error:
            raise StoreError("unreachable", key, f"{self.url}: {error}") from None

    def put(self, key: str, data: bytes) -> None:
        """Write `data` under `key`, whole or not at all (one PUT)."""
        full = self._key(key)
        self._call(key, lambda: self.client.put_object(Bucket=self.bucket, Key=full, Body=data))

    def get(self, key: str) -> bytes:
        """The bytes under `key`; StoreError("missing") if there are none."""
        full = self._key(key)
        # The body is read inside the call: a connection lost mid-read is "unreachable" too.
        return self._call(
            key, lambda: self.client.get_object(Bucket=self.bucket, Key=full)["Body"].read()
        )

    def exists(self, key: str) -> bool:
        """Whether `key` holds anything."""
        full = self._key(key)
        try:
            self._call(
                key, lambda: self.client.head_object(Bucket=self.bucket, Key=full), HEAD_MISSING
            )
        except StoreError as error:
            if error.code == "store_missing":
                return False
            raise
        return True

    def delete(self, key: str) -> None:
        """Remove `key`; no error when it is already gone (S3 deletes are idempotent)."""
        full = self._key(key)
        self._call(key, lambda: self.client.delete_object(Bucket=self.bucket, Key=full))

    def list(self, prefix: str = "") -> Iterator[Entry]:
        """Every key starting with `prefix`, page by page."""
        base = f"{self.prefix}/" if self.prefix else ""
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=base + prefix
        )
        iterator = iter(pages)
        while page := self._call(f"{prefix}*", lambda: next(iterator, None)):
            for item in page.get("Contents", []):
                modified = item["LastModified"].astimezone(UTC)
                yield Entry(item["Key"][len(base) :], item["Size"], modified)
