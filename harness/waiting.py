"""The one way the harness, the tests and the benches wait for something to happen."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def wait_until(
    check: Callable[[], T], timeout: float, what: str | None = None, interval: float = 0.2
) -> T:
    """Poll `check` until it is truthy and return its value.

    After `timeout` s: raise TimeoutError naming `what` when given, else return the last value
    (falsy), for callers that report what they saw instead of failing.
    """
    deadline = time.monotonic() + timeout
    while not (value := check()):
        if time.monotonic() > deadline:
            if what is not None:
                raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
            return value
        time.sleep(interval)
    return value


def in_background(work: Callable[[], Any]) -> Callable[[], Any]:
    """Run `work` in a thread; the returned function joins it and gives its result."""
    box: list[Any] = []
    thread = threading.Thread(target=lambda: box.append(work()), daemon=True)
    thread.start()

    def join() -> Any:
        thread.join()
        return box[0]

    return join
