"""A gather loop: classify jobs running on many pool threads share one forward pass.

Each job thread decodes its own image, then submits the pixels and waits on a future; one daemon
thread takes everything queued (up to `max_size`, waiting at most `wait_s` for stragglers) and
runs it as one batch. While a batch runs, new jobs queue up, so the batch size follows the load by
itself. Decoding stays on the job's thread so a costly file (a 12 MP PNG) delays only its own
answer: when the batch decoded, 5 photos waited 5.7 s behind one 97 KB 16-bit PNG. Heavy decodes
also pass a semaphore, so a flood of them holds a bounded amount of memory.
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field, replace

import numpy as np

from model.runtime import images as imagelib
from model.runtime.classifier import Classifier, Prediction


@dataclass(frozen=True)
class Answer:
    """One job's prediction and how it was batched."""

    prediction: Prediction
    batch_size: int
    queued_ms: float  # waiting in the gather queue
    decode_ms: float  # this job's decode, on its own thread
    model_ms: float  # the whole batch's forward pass


@dataclass
class _Job:
    classifier: Classifier
    pixels: np.ndarray | imagelib.ImageError
    top_k: int
    decode_ms: float
    future: Future[Answer] = field(default_factory=Future)
    queued_at: float = field(default_factory=time.perf_counter)


class Batcher:
    """The gather loop of one worker process; `submit` is safe from any thread."""

    def __init__(self, max_size: int = 32, wait_s: float = 0.0, heavy_decodes: int = 1) -> None:
        self.max_size = max_size
        self.wait_s = wait_s
        # At most this many decodes over imagelib.LIGHT_DECODE_BYTES at once in this process
        # (public: a test holds it to stand for a heavy decode under way).
        self.heavy = threading.BoundedSemaphore(heavy_decodes)
        self._jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def submit(self, classifier: Classifier, image: bytes, top_k: int) -> Future[Answer]:
        """Decode one image on the calling thread, then queue it for the next batch."""
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="batcher", daemon=True)
                self._thread.start()
        started = time.perf_counter()
        pixels: np.ndarray | imagelib.ImageError
        try:
            pixels = imagelib.decode_image(image, classifier.image_size, self.heavy)
        except imagelib.ImageError as error:
            pixels = error
        job = _Job(classifier, pixels, top_k, (time.perf_counter() - started) * 1e3)
        self._jobs.put(job)
        return job.future

    def _gather(self) -> list[_Job]:
        jobs = [self._jobs.get()]
        deadline = time.perf_counter() + self.wait_s
        while len(jobs) < self.max_size:
            try:
                jobs.append(self._jobs.get(timeout=max(deadline - time.perf_counter(), 0)))
            except queue.Empty:
                break
        return jobs

    def _loop(self) -> None:
        while True:
            jobs = self._gather()
            # A reload may swap the classifier mid-stream: each job runs on the one it started with.
            groups: dict[int, list[_Job]] = {}
            for job in jobs:
                groups.setdefault(id(job.classifier), []).append(job)
            for group in groups.values():
                self._run(group)

    def _run(self, jobs: list[_Job]) -> None:
        started = time.perf_counter()
        classifier = jobs[0].classifier
        try:
            predictions = classifier.predict_decoded(
                [job.pixels for job in jobs], top_k=max(job.top_k for job in jobs)
            )
            timings = classifier.last_timings
        except Exception as exc:
            if len(jobs) > 1:
                # Bad images come back as errors, not raise; if something still raises, run the
                # jobs one by one so only the culprit fails.
                for job in jobs:
                    self._run([job])
                return
            jobs[0].future.set_exception(exc)
            return
        for job, prediction in zip(jobs, predictions, strict=True):
            job.future.set_result(
                Answer(
                    replace(prediction, top_k=prediction.top_k[: job.top_k]),
                    len(jobs),
                    (started - job.queued_at) * 1e3,
                    job.decode_ms,
                    timings.model_ms,
                )
            )
