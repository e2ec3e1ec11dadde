"""A process's blob store and model registry, from the worker's settings."""

from __future__ import annotations

import functools

from store.blobs import Store, open_store
from store.registry import Registry
from worker import stats
from worker.settings import WorkerSettings


@functools.cache
def _open(url: str) -> Store:
    return open_store(url)


def blob_store(settings: WorkerSettings) -> Store:
    """The store STORE_URL names (a folder under VAR_DIR by default), opened once per process."""
    return _open(settings.store_location)


def registry(settings: WorkerSettings) -> Registry:
    """The model registry on the broker's Redis, mirrored into the blob store."""
    return Registry(stats.client(settings.broker_url()), blob_store(settings))
