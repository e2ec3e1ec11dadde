"""Give memory back to the system after a model switch or a child job.

A switched-out version's LiteRT interpreters and buffers were allocated by several pool threads,
each in its own glibc malloc arena; freed, they stay in those arenas, so the worker's RSS grew by
each version it had ever served. `malloc_trim(0)` returns the free pages of every arena.
A spawned child also leaves multiprocessing's resource tracker running for good (13 MB): with
no child left, nothing is tracked, and it is stopped (the next child starts a new one).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
import logging
import multiprocessing.resource_tracker
import threading

log = logging.getLogger(__name__)
_children = 0  # child jobs running now in this process
_lock = threading.Lock()


@functools.cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    library = ctypes.CDLL(name) if name else None
    return library if library is not None and hasattr(library, "malloc_trim") else None


def give_back() -> None:
    """Collect garbage, then return the allocator's free pages to the system (glibc only)."""
    gc.collect()
    if (libc := _libc()) is not None:
        libc.malloc_trim(0)


def child_started() -> None:
    """Count a child job in (see `child_ended`)."""
    global _children
    with _lock:
        _children += 1


def child_ended() -> None:
    """Count a child job out; the last one out stops the resource tracker and gives back memory."""
    global _children
    with _lock:
        _children -= 1
        if _children == 0:
            # CPython's own way to end it (used by its tests); it restarts on the next spawn.
            multiprocessing.resource_tracker._resource_tracker._stop()
    give_back()
