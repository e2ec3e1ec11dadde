"""The jobs that need TensorFlow, each run in a child process (worker/child.py): a retrain
(unpack the dataset, retrain(), publish through the gate) and a named backbone's conversion.

This module imports TensorFlow (through `model.train`); the worker imports it only in that child.
"""

from __future__ import annotations

import dataclasses
import errno
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import contract
from contract import options
from model import data, litert, mistakes, train
from model import metrics as metrics_lib
from model.hparams import AUTO, BACKBONE_NAMES, HParams, validate
from model.predict import load_classifier
from model.runtime.home import default_home
from store.blobs import StoreError
from store.registry import ZERO_SHOT
from worker import datasets, fetch, retraining, storage, versions
from worker.settings import WorkerSettings

EVAL_BATCH = 32


def hparams_from(params: dict, architecture: str) -> HParams:
    """retrain.py-named parameters to HParams; unknown names or bad values raise OptionError.

    The backbone is `tfhub_module` when the request names one (`breedbot retrain --via-queue`),
    else the worker's RETRAIN_ARCHITECTURE."""
    # Names and values first: HParams(**params) takes anything.
    options.check({name: value for name, value in params.items() if name != "tfhub_module"})
    # A queued job names a backbone breedbot builds itself: hub.load() of any other handle would
    # run whatever graph it points at. A TF Hub handle stays a CLI-only option.
    if "tfhub_module" in params and params["tfhub_module"] not in (AUTO, *BACKBONE_NAMES):
        known = ", ".join((AUTO, *BACKBONE_NAMES))
        raise options.OptionError(
            [("option_backbone", {"raw": params["tfhub_module"], "known": known})]
        )
    hparams = HParams(**{"tfhub_module": architecture, **params})
    validate(hparams)
    return hparams


def _same_label(a: str, b: str) -> bool:
    def norm(s: str) -> str:
        return re.sub(r"[^0-9a-z]+", " ", s.lower()).strip()

    return norm(a) == norm(b)


def active_accuracy_on(
    version: int, test: list[data.LabeledImage], settings: WorkerSettings
) -> float:
    """Top-1 accuracy of `version` on a test split, matching labels by normalised name."""
    reg = storage.registry(settings)
    classifier = load_classifier(
        versions.folder(
            reg, version, settings.models_root, _home(settings), litert.prepare_zero_shot
        ),
        home=settings.breedbot_home,
        engine=settings.inference_engine,
        num_threads=settings.litert_threads,
    )
    hits = 0
    for start in range(0, len(test), EVAL_BATCH):
        chunk = test[start : start + EVAL_BATCH]
        predictions = classifier.predict([im.path.read_bytes() for im in chunk], top_k=1)
        hits += sum(
            bool(p.top_k) and _same_label(p.top_k[0].label, im.label)
            for p, im in zip(predictions, chunk, strict=True)
        )
    return hits / len(test) if test else 0.0


def _refused(problem: str, message: str, **params: Any) -> contract.Refused:
    """The refusal to raise; `problem` and `params` let the bot word it."""
    return contract.Refused(message, problem, params)


def _weakest(per_class: dict[str, Any]) -> list[list[Any]]:
    """Up to three classes below 100 % accuracy: [display name, accuracy, photos]."""
    return [
        [data.display_name(label), accuracy, per_class[label]["n"]]
        for label, accuracy in metrics_lib.worst_classes(per_class)
        if accuracy < 1
    ]


def _feedback_refusal(exc: data.DatasetError) -> contract.Refused:
    """A dataset problem of `/retrain feedback`, worded as what to do in the chat."""
    if exc.code == "one_class":
        found, classes = exc.params["found"], exc.params["classes"]
        message = (
            f"The corrections so far cover only {found} breed(s): {classes}. Retraining needs "
            "at least 2: press ✅ or ❌ under more answers."
        )
        return _refused("feedback_one_class", message, found=found, classes=classes)
    if exc.code in {"not_found", "no_images"}:
        message = "No corrections yet: press ✅ or ❌ under answers to photos first."
        return _refused("feedback_empty", message)
    return _refused(exc.code, str(exc), **exc.params)


# Errors of a full disk, a quota, a file size limit or a read-only / immutable folder.
STORAGE_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM}
)


def _storage_failure(exc: Exception, root: Path) -> contract.Refused | None:
    """A clear refusal when the models folder cannot be written; None for any other error."""
    if isinstance(exc, OSError) and exc.errno in STORAGE_ERRNOS:
        why = exc.strerror
    elif str(root) in str(exc):
        # TensorFlow's writers raise their own error types, naming the file they were writing.
        why = type(exc).__name__
    else:
        return None
    return _refused(
        "storage",
        f"the new version could not be written to the models folder ({why}); "
        "the active model is unchanged",
        why=why,
    )


def run(
    request: contract.RetrainRequest, settings: WorkerSettings, progress: retraining.ProgressSink
) -> contract.RetrainResult:
    """Retrain on the request's dataset and publish it; bad input raises `contract.Refused`."""
    ref = contract.DatasetRef.from_dict(request.dataset)
    try:
        hparams = hparams_from(request.params, settings.retrain_architecture)
    except options.OptionError as exc:  # a bot of another release let it through
        raise _refused(exc.code, str(exc), **exc.params) from exc
    report = retraining.Reporter(progress, time.monotonic() + settings.retrain_soft_time_limit)
    root = settings.models_root
    reg = storage.registry(settings)
    staged: Path | None = None
    with tempfile.TemporaryDirectory(prefix="breedbot-retrain-") as tmp:
        try:
            staged = versions.new_staging_dir(root)
            prepared = _dataset_source(ref, Path(tmp), settings, hparams)
            source = prepared.folder
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
            sheet = _mistakes_sheet(source, result, request)  # while the photos are here
            # After "saving": the gate compares the new version with the active one.
            report("comparing", 0, 1, result.validation_accuracy)
            test = _test_split(source, Path(tmp) / "eval", hparams)
            published = versions.publish(
                reg,
                staged,
                {
                    "created_by": request.requested_by,
                    "dataset": prepared.record,
                    "params": request.params,
                },
                root,
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
        except data.DatasetError as exc:
            if ref.feedback:  # the admin can only collect more corrections, not fix folders
                raise _feedback_refusal(exc) from exc
            raise _refused(exc.code, str(exc), **exc.params) from exc
        except (fetch.InputError, train.AccuracyGateError) as exc:
            raise _refused(exc.code, str(exc), **exc.params) from exc
        except datasets.NothingToMerge as exc:
            raise _refused("merge_nothing_kept", str(exc), version=exc.version) from exc
        except StoreError as exc:
            raise versions.refusal(exc) from exc
        except Exception as exc:
            if (refusal := _storage_failure(exc, root)) is None:
                raise
            raise refusal from exc
        finally:
            if staged is not None:
                shutil.rmtree(staged, ignore_errors=True)
    versions.prune(reg, root, settings.keep_versions)
    metrics = {
        **published.record["metrics"],
        "gate": published.record["gate"],
        "worst_classes": _weakest(result.metrics.get("per_class", {})),
        "open_set": result.metrics.get("open_set"),  # what other photos get, calibration
        # Where the photos came from, with the new classes by display name, for the reply.
        "dataset": prepared.record
        | {"new_classes": list(map(data.display_name, prepared.record["new_classes"]))},
    }
    outcome = contract.RetrainResult(
        published.version,
        published.activated,
        result.test_accuracy,
        metrics,
        published.reason,
        problem=published.problem,
        params=published.params,
        # The test split's when there is one, else the out-of-fold answers: what the accuracy is.
        confusion_matrix=(result.metrics.get("test") or result.metrics)["confusion_matrix"],
        class_names=list(map(data.display_name, result.labels)),
        mistakes_jpeg_b64=sheet,
    )
    if not published.activated:
        raise _gate_refusal(outcome)
    return outcome


def _gate_refusal(outcome: contract.RetrainResult) -> contract.Refused:
    """A version the gate kept from going live fails its job (Flower, `retrain --via-queue`);
    the refusal carries the version's report (without its pictures) for the chat's reply."""
    report = dataclasses.replace(outcome, confusion_matrix=None, mistakes_jpeg_b64=None)
    return _refused(
        outcome.problem or "gate",
        f"version {outcome.version} did not go live: {outcome.reason}",
        **outcome.params,
        **{contract.GATE_REPORT: report.to_dict()},
    )


def _mistakes_sheet(
    source: Path, result: train.TrainResult, request: contract.RetrainRequest
) -> str | None:
    """The out-of-fold mistakes as one contact sheet (base64 JPEG), None without any."""
    misclassified = result.metrics.get("misclassified", [])
    sheet = mistakes.contact_sheet(source, misclassified, request.mistake_caption)
    return None if sheet is None else contract.encode_bytes(sheet)


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
    ref: contract.DatasetRef, tmp: Path, settings: WorkerSettings, hparams: HParams
) -> datasets.Prepared:
    """The request's photos, kept and merged as it asks, as a training folder and its record."""
    reg = storage.registry(settings)
    version = reg.active_version()
    active = None if version == ZERO_SHOT else reg.record(version)
    return datasets.prepare(ref, tmp, settings, reg.store, hparams.min_images_per_class, active)


def _home(settings: WorkerSettings) -> Path:
    return settings.breedbot_home or default_home()


def convert_zero_shot(backbone: str, home: Path, emit: retraining.ProgressSink) -> None:
    """Convert `backbone`'s zero-shot model into BREEDBOT_HOME for LiteRT serving."""
    litert.prepare_zero_shot(backbone, home)
