"""This process's blob store and model registry, opened once from the settings."""

from __future__ import annotations

import functools

from store.blobs import Store, open_store
from store.registry import Registry
from worker import stats
from worker.settings import get_settings


@functools.cache
def _open(url: str) -> Store:
    return open_store(url)


def blob_store() -> Store:
    """The store STORE_URL names (a folder under VAR_DIR by default)."""
    return _open(get_settings().store_location)


def registry() -> Registry:
    """The model registry on the broker's Redis, mirrored into the blob store."""
    return Registry(stats.client(get_settings().broker_url()), blob_store())
