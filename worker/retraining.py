"""A retrain job: fetch the dataset, retrain(), publish the result through the accuracy gate."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded

from model import data, registry, train
from model import metrics as metrics_lib
from model.hparams import HParams, validate
from model.predict import load_classifier
from worker import contract, fetch, serving
from worker.settings import WorkerSettings

ProgressSink = Callable[[contract.Progress], None]

# One retrain at a time per worker process (the threads pool would otherwise run several).
_exclusive = threading.Lock()
EVAL_BATCH = 32


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


def hparams_from(params: dict) -> HParams:
    """retrain.py-named parameters to HParams; unknown names or bad values raise ValueError."""
    names = {f.name for f in dataclasses.fields(HParams)}
    unknown = sorted(set(params) - names)
    if unknown:
        raise ValueError(f"unknown retrain parameter(s): {', '.join(unknown)}")
    hparams = HParams(**params)
    validate(hparams)
    return hparams


class _Reporter:
    """Turns retrain()'s callbacks into throttled Progress events, and enforces the soft limit.

    The threads pool cannot interrupt a task, so the deadline is checked here, at every step.
    Bottleneck counts of the train, validation and test splits are chained into one running total.
    """

    def __init__(self, sink: ProgressSink, deadline: float) -> None:
        self.sink = throttled(sink, 0.5)
        self.deadline = deadline
        self._offset = 0
        self._split: str | None = None
        self._split_total = 0
        self._accuracy: float | None = None

    def __call__(self, stage: str, done: int, total: int, accuracy: float | None) -> None:
        if time.monotonic() > self.deadline:
            raise SoftTimeLimitExceeded("retrain soft time limit exceeded")
        if stage.startswith("bottlenecks"):
            if stage != self._split:
                self._offset += self._split_total if self._split else 0
                self._split = stage
            self._split_total = total
            stage, done, total = "bottlenecks", self._offset + done, self._offset + total
        self._accuracy = accuracy if accuracy is not None else self._accuracy
        self.sink(contract.Progress(stage, done, total, self._accuracy))


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


def _same_label(a: str, b: str) -> bool:
    def norm(s: str) -> str:
        return re.sub(r"[^0-9a-z]+", " ", s.lower()).strip()

    return norm(a) == norm(b)


def active_accuracy_on(
    version: int, test: list[data.LabeledImage], settings: WorkerSettings
) -> float:
    """Top-1 accuracy of `version` on a test split, matching labels by normalised name."""
    served = serving.holder().current()
    if served.version == version:
        classifier = served.classifier
    else:
        folder = registry.version_dir(settings.models_root, version)
        classifier = load_classifier(folder, home=settings.breedbot_home)
    hits = 0
    for start in range(0, len(test), EVAL_BATCH):
        chunk = test[start : start + EVAL_BATCH]
        predictions = classifier.predict([im.path.read_bytes() for im in chunk], top_k=1)
        hits += sum(
            bool(p.top_k) and _same_label(p.top_k[0].label, im.label)
            for p, im in zip(predictions, chunk, strict=True)
        )
    return hits / len(test) if test else 0.0


def _failed(
    error: str, message: str, problem: str | None = None, **params: Any
) -> contract.RetrainResult:
    """An error result; `problem` (default: `error`) and `params` let the bot word it."""
    return contract.RetrainResult(
        None, False, None, reason=message, error=error, problem=problem or error, params=params
    )


# Errors of a full disk, a quota, a file size limit or a read-only / immutable folder.
STORAGE_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM}
)


def _storage_failure(exc: Exception, root: Path) -> contract.RetrainResult | None:
    """A clear failure when the models folder cannot be written; None for any other error."""
    if isinstance(exc, OSError) and exc.errno in STORAGE_ERRNOS:
        why = exc.strerror
    elif str(root) in str(exc):
        # TensorFlow's writers raise their own error types, naming the file they were writing.
        why = type(exc).__name__
    else:
        return None
    return _failed(
        "storage",
        f"the new version could not be written to the models folder ({why}); "
        "the active model is unchanged",
        why=why,
    )


def run(
    request: contract.RetrainRequest, settings: WorkerSettings, progress: ProgressSink
) -> contract.RetrainResult:
    """Retrain on the request's dataset and publish it; bad input gives an error result."""
    ref = contract.DatasetRef.from_dict(request.dataset)
    if ref.merge_last:
        # Uploads are not kept after training, so there is no "last dataset" to merge yet.
        return _failed("unsupported", "merging feedback with the last dataset is not supported")
    try:
        hparams = hparams_from({"tfhub_module": settings.retrain_architecture, **request.params})
    except (TypeError, ValueError) as exc:
        return _failed("bad_params", str(exc))
    report = _Reporter(progress, time.monotonic() + settings.retrain_soft_time_limit)
    root = settings.models_root
    staged: Path | None = None
    with tempfile.TemporaryDirectory(prefix="breedbot-retrain-") as tmp:
        try:
            staged = registry.new_staging_dir(root)
            source = _dataset_source(ref, Path(tmp), settings, report)
            result = train.retrain(
                source,
                staged,
                hparams,
                home=settings.breedbot_home,
                bottleneck_dir=settings.bottleneck_dir,
                progress=report,
                engine=settings.inference_engine,
                num_threads=settings.litert_threads,
            )
            report("evaluating", 0, 1, result.validation_accuracy)
            test = _test_split(source, Path(tmp) / "eval", hparams)
            published = registry.publish(
                root,
                staged,
                {
                    "created_by": request.requested_by,
                    "dataset": {"name": "feedback" if ref.feedback else ref.name},
                    "params": request.params,
                },
                min_accuracy=(
                    settings.min_accuracy if request.min_accuracy is None else request.min_accuracy
                ),
                force=request.force,
                # Without a held-out split (cross-validation), the active version has no photos
                # it never saw to be measured on, so only the minimum applies.
                evaluate_active=(
                    (lambda version: active_accuracy_on(version, test, settings)) if test else None
                ),
            )
        except fetch.InputError as exc:
            return _failed(exc.code, str(exc), **exc.params)
        except data.DatasetError as exc:
            return _failed("bad_dataset", str(exc), exc.code, **exc.params)
        except train.AccuracyGateError as exc:
            return _failed("below_gate", str(exc), exc.code, **exc.params)
        except Exception as exc:
            if (failure := _storage_failure(exc, root)) is None:
                raise
            return failure
        finally:
            if staged is not None:
                shutil.rmtree(staged, ignore_errors=True)
    registry.prune(root, settings.keep_versions)
    metrics = {
        **published.record["metrics"],
        "gate": published.record["gate"],
        "worst_classes": metrics_lib.worst_classes(result.metrics.get("per_class", {})),
    }
    return contract.RetrainResult(
        published.version,
        published.activated,
        result.test_accuracy,
        metrics,
        published.reason,
        problem=published.problem,
        params=published.params,
    )


def _test_split(source: Path, extract_dir: Path, hparams: HParams) -> list[data.LabeledImage]:
    """The held-out test split retrain() reported on; empty when it cross-validated instead."""
    if hparams.testing_percentage is None:
        return []
    dataset = data.load_dataset(
        source, extract_dir=extract_dir, min_images_per_class=hparams.min_images_per_class
    )
    return data.split_dataset(dataset, hparams.testing_percentage, hparams.validation_percentage)[
        "test"
    ]


def _dataset_source(
    ref: contract.DatasetRef, tmp: Path, settings: WorkerSettings, report: _Reporter
) -> Path:
    if ref.feedback:
        return settings.feedback_root
    report("download", 0, 1, None)
    source = tmp / "dataset.zip"
    source.write_bytes(fetch.dataset_bytes(ref, settings))
    report("download", 1, 1, None)
    return source
