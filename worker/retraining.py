"""Retrains in the worker: one at a time per process, each in a spawned child process.

The child (`worker/tf_jobs.py`) imports TensorFlow and the training code; this side does not,
so a CPU worker serving photos never loads TensorFlow, and a retrain's memory goes back to the
system when it ends.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Callable, Iterator

from celery.exceptions import SoftTimeLimitExceeded

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


def throttled(
    sink: ProgressSink, interval: float, clock: Callable[[], float] = time.monotonic
) -> ProgressSink:
    """Forward progress on a stage change, at the end of a stage, or at most every `interval` s."""
    last: list[tuple[str, float]] = [("", 0.0)]

    def forward(p: contract.Progress) -> None:
        stage, at = last[0]
        now = clock()
        if p.stage != stage or p.done >= p.total or now - at >= interval:
            last[0] = (p.stage, now)
            sink(p)

    return forward


# retrain()'s stage names: "bottlenecks@efficientnet_lite1#2/3" (a candidate), "final@…".
STAGE = re.compile(r"^(?P<stage>[a-z_]+)(?:@(?P<backbone>[^#]+)(?:#(?P<i>\d+)/(?P<n>\d+))?)?$")
ESTIMATE_AFTER = 2.0  # seconds into a stage before its pace says anything


class Reporter:
    """Turns retrain()'s callbacks into throttled Progress events (stage, backbone, candidate,
    time left in the stage), and enforces the soft limit.

    The threads pool cannot interrupt a task, so the deadline is checked here, at every step.
    """

    def __init__(
        self, sink: ProgressSink, deadline: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.sink = throttled(sink, 0.5, clock)
        self.deadline = deadline
        self.clock = clock
        self._stage = ""
        self._started = (0.0, 0)  # when the current stage began, and its count then
        self._accuracy: float | None = None

    def __call__(self, stage: str, done: int, total: int, accuracy: float | None) -> None:
        now = self.clock()
        if now > self.deadline:
            raise SoftTimeLimitExceeded("retrain soft time limit exceeded")
        if stage != self._stage:
            self._stage, self._started = stage, (now, done)
        since, first = self._started
        left = None
        if now - since >= ESTIMATE_AFTER and done > first:
            left = round((now - since) / (done - first) * (total - done), 1)
        self._accuracy = accuracy if accuracy is not None else self._accuracy
        parts = STAGE.match(stage)
        name, backbone, i, n = parts.groups() if parts else (stage, None, None, None)
        self.sink(
            contract.Progress(
                name, done, total, self._accuracy, backbone,
                int(i) if i else None, int(n) if n else None, left,
            )
        )  # fmt: skip


def run_in_child(
    request: contract.RetrainRequest, settings: WorkerSettings, progress: ProgressSink
) -> contract.RetrainResult:
    """`run` in a child process: TensorFlow and the retrain's memory leave with it."""
    return child.run("worker.tf_jobs:run", (request, settings), progress)
