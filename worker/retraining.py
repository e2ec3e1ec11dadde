"""Retrains in the worker: one at a time per process, each in a spawned child process.

The child (`worker/tf_jobs.py`) imports TensorFlow and the training code; this side does not,
so a CPU worker serving photos never loads TensorFlow, and a retrain's memory goes back to the
system when it ends.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator

import contract
from worker import child
from worker.settings import WorkerSettings

ProgressSink = Callable[[contract.Progress], None]

# One retrain at a time per worker process (the threads pool would otherwise run several).
_exclusive = threading.Lock()


class Busy(RuntimeError):
    """Another retrain runs in this process; the task retries later (maybe on another worker)."""


@contextlib.contextmanager
def exclusive() -> Iterator[None]:
    """Hold the process's retrain slot or raise Busy."""
    if not _exclusive.acquire(blocking=False):
        raise Busy("a retrain is already running in this worker")
    try:
        yield
    finally:
        _exclusive.release()


def throttled(sink: ProgressSink, interval: float) -> ProgressSink:
    """Forward progress on a stage change, at the end of a stage, or at most every `interval` s."""
    last: list[tuple[str, float]] = [("", 0.0)]

    def forward(p: contract.Progress) -> None:
        stage, at = last[0]
        now = time.monotonic()
        if p.stage != stage or p.done >= p.total or now - at >= interval:
            last[0] = (p.stage, now)
            sink(p)

    return forward


def run_in_child(
    request: contract.RetrainRequest, settings: WorkerSettings, progress: ProgressSink
) -> contract.RetrainResult:
    """`run` in a child process: TensorFlow and the retrain's memory leave with it."""
    return child.run("worker.tf_jobs:run", (request, settings), progress)
