"""Transfer-learning retrain: cached bottlenecks, a new softmax layer, a ready-to-serve folder.

`retrain()` is what both the `breedbot retrain` CLI and the worker's retrain task call.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import ClassVar

import numpy as np

from model import backbones, crossval, data, features, head, litert, metrics, openset_fit, serving
from model.hparams import AUTO, AUTO_CANDIDATES, L2_GRID, HParams, validate
from model.problems import Problem
from model.runtime import litert as runtime_litert
from model.runtime import openset
from model.runtime.classifier import LABELS_FILE, METRICS_FILE

# (stage, done, total, latest validation accuracy); stages: bottlenecks, training, final (the
# served layer), saving; all but saving end in "@backbone", or "@backbone#i/n" for a candidate.
ProgressFn = Callable[[str, int, int, float | None], None]

CONFUSION_FILE = "confusion_matrix.png"
SAVED_MODEL_DIR = "saved_model"
# The trained layer (kernel, bias): a host rebuilds the SavedModel from it and the backbone.
HEAD_FILE = "head.npz"
LOGS_DIR = "logs"
# `auto` prefers a faster backbone whose cross-validated accuracy is at most this much lower.
AUTO_TIE = 0.005
# Photos int8 is checked against float on when no test split is held out.
INT8_CHECK_IMAGES = 96


class AccuracyGateError(Problem, RuntimeError):
    """The trained model is below --assert_accuracy_at_least; nothing was written."""

    messages: ClassVar[dict[str, str]] = {
        "below_required_accuracy": (
            "test accuracy {accuracy:.1%} is below the required {required:.1%}; "
            "no model was written"
        )
    }


@dataclass
class TrainResult:
    """What a retrain produced."""

    output_dir: Path
    labels: list[str]
    test_accuracy: float
    validation_accuracy: float
    metrics: dict
    bottlenecks_computed: int
    bottlenecks_cached: int
    skipped: list[tuple[str, str]] = field(default_factory=list)


def distortions(hp: HParams) -> features.Distortions:
    """The distortion flags as one value."""
    return features.Distortions(
        hp.flip_left_right, hp.random_crop, hp.random_scale, hp.random_brightness
    )


def head_config(hp: HParams) -> head.HeadConfig:
    """The subset of flags that drives head training."""
    return head.HeadConfig(
        steps=hp.how_many_training_steps,
        learning_rate=hp.learning_rate,
        batch_size=hp.train_batch_size,
        eval_interval=hp.eval_step_interval,
        l2=hp.l2 if hp.l2 is not None else 0.0,  # without --l2, cross-validation sets it
        label_smoothing=hp.label_smoothing,
        early_stopping_patience=hp.early_stopping_patience if hp.early_stopping else None,
        class_weighting=hp.class_weighting,
        seed=hp.seed,
    )


def l2_grid(hp: HParams) -> tuple[float, ...]:
    """The L2 values cross-validation chooses from: --l2 alone when given."""
    return (hp.l2,) if hp.l2 is not None else L2_GRID


def extractor(
    backbone: backbones.Backbone,
    engine: str = "auto",
    home: Path | None = None,
    num_threads: int | None = None,
) -> Callable[[np.ndarray], np.ndarray]:
    """`backbone.features`, or its LiteRT float twin when `engine` resolves to litert.

    Both write to the same cache folders: LiteRT float vectors differ from TensorFlow's by float
    rounding only (relative error ~3e-6 on real photos, see tests/test_engine.py). The LiteRT
    model is converted on the first call, so a run served wholly from the cache converts nothing.
    """
    if runtime_litert.resolve_engine(engine) == "tf":
        return backbone.features

    where = Path(home) if home else backbones.default_home()
    return litert.lazy_features(
        lambda: litert.features_runner(backbone, where, num_threads=num_threads)
    )


def bottlenecks(
    backbone: backbones.Backbone,
    items: list[data.LabeledImage],
    views: list[list[features.View]],
    cache_root: Path,
    *,
    batch_size: int = 32,
    progress: features.CountFn | None = None,
    embed: Callable[[np.ndarray], np.ndarray] | None = None,
) -> features.Extraction:
    """Cached bottlenecks of labeled images through one backbone (`views[i]` for image i).

    `embed` computes missing vectors (default: `extractor(backbone)`, LiteRT on a CPU).
    """
    return features.extract(
        embed or extractor(backbone),
        backbone.identity,
        backbone.feature_dim,
        [im.path for im in items],
        [im.sha256 for im in items],
        views,
        cache_root,
        image_size=backbone.image_size,
        batch_size=batch_size,
        progress=progress,
    )


def _tagged(progress: ProgressFn | None, tag: str) -> ProgressFn | None:
    """`progress` with "@tag" after each stage name: which backbone ("#2/3": which candidate)."""
    if progress is None:
        return None
    return lambda stage, done, total, accuracy: progress(f"{stage}@{tag}", done, total, accuracy)


def _report(progress: ProgressFn | None, stage: str) -> Callable[[int, int], None]:
    def count(done: int, total: int) -> None:
        if progress:
            progress(stage, done, total, None)

    return count


def retrain(
    image_dir: Path,
    output_graph: Path,
    hparams: HParams | None = None,
    *,
    labels_csv: Path | None = None,
    bottleneck_dir: Path | None = None,
    home: Path | None = None,
    summaries_dir: Path | None = None,
    output_labels: Path | None = None,
    progress: ProgressFn | None = None,
    engine: str = "auto",
    num_threads: int | None = None,
) -> TrainResult:
    """Retrain a softmax layer on a labeled image set and write a servable model folder.

    `engine` runs bottleneck extraction ("auto": LiteRT float on a CPU, TensorFlow on a GPU);
    `num_threads` sizes LiteRT (default: all cores). Whatever the engine, the folder gets the
    LiteRT float and int8 classifiers and metrics.json says which of them to serve.
    """
    hp = hparams or HParams()
    validate(hp)
    started = time.perf_counter()
    home = Path(home) if home else backbones.default_home()
    bottleneck_dir = Path(bottleneck_dir) if bottleneck_dir else home / "bottlenecks"
    output_graph = Path(output_graph)
    output_graph.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="breedbot-extract-") as extract_dir:
        dataset = data.load_dataset(
            Path(image_dir),
            labels_csv=labels_csv,
            extract_dir=Path(extract_dir),
            min_images_per_class=hp.min_images_per_class,
        )
        fit_items, test_items = _held_out(dataset, hp)
        labels = dataset.classes
        index = {label: i for i, label in enumerate(labels)}
        items = fit_items + test_items
        y_all = np.array([index[im.label] for im in items], np.int64)
        train_views = features.training_views(distortions(hp), hp.distortion_copies)
        engine = runtime_litert.resolve_engine(engine)
        extract_started = time.perf_counter()
        handle, auto = hp.tfhub_module, None
        if handle == AUTO:
            embed = functools.partial(extractor, engine=engine, home=home, num_threads=num_threads)
            handle, auto = choose_backbone(
                items[: len(fit_items)], y_all, labels, hp, home, bottleneck_dir, progress, embed
            )
        backbone = backbones.load_backbone(handle, home)
        fit = _fit(
            backbone,
            items,
            len(fit_items),
            y_all,
            labels,
            train_views,
            hp,
            bottleneck_dir,
            _tagged(progress, handle),
            extractor(backbone, engine, home, num_threads),
        )
        # The folds' training (the candidates' too) is counted as training, not extraction.
        folds_seconds = fit.cv_seconds + sum(
            c["cv_seconds"] for c in (auto or {}).get("candidates", {}).values()
        )
        extraction_seconds = time.perf_counter() - extract_started - folds_seconds
        ex, cv = fit.extraction, fit.cv
        skipped = dataset.skipped + [
            (_relative(items[i].path, dataset.root), reason) for i, reason in ex.failures
        ]
        # What int8 is checked on: the test split, else photos spread over the whole set.
        check_rows = fit.test_rows if len(fit.test_rows) else _spread(fit.rows, INT8_CHECK_IMAGES)
        calibration_rows = _spread(fit.rows, litert.CALIBRATION_IMAGES)
        # Read now: the files of an uploaded zip are gone once this block ends.
        calibration_bytes = [items[i].path.read_bytes() for i in calibration_rows]
        check_bytes = [items[i].path.read_bytes() for i in check_rows]
    original = ex.vectors[features.ORIGINAL.key()]
    train_x = np.concatenate([ex.vectors[v.key()][fit.rows] for v in train_views])
    train_y = np.tile(y_all[fit.rows], len(train_views))
    names = [_relative(items[i].path, dataset.root) for i in range(len(items))]
    calibration = litert.Photos(
        calibration_bytes, [items[i].sha256 for i in calibration_rows], original[calibration_rows]
    )
    check = litert.Photos(check_bytes, [items[i].sha256 for i in check_rows], original[check_rows])

    work = Path(tempfile.mkdtemp(prefix=f".{output_graph.name}.tmp-", dir=output_graph.parent))
    try:
        train_started = time.perf_counter()
        # The served layer: every photo but a held-out test split, for the steps the folds chose.
        trained = head.train_head(
            train_x,
            train_y,
            train_x[:0],
            train_y[:0],
            len(labels),
            replace(
                head_config(hp), steps=cv.best_step, l2=cv.best_l2, early_stopping_patience=None
            ),
            log_dir=work / LOGS_DIR,
            on_step=(
                (lambda s, t, acc: progress(f"final@{handle}", s, t, cv.accuracy))
                if progress
                else None
            ),
        )
        open_set, open_report = _open_set(backbone, ex, fit, train_views, y_all, labels, hp)
        training_seconds = time.perf_counter() - train_started + folds_seconds
        oof = metrics.summarize(
            y_all[fit.rows], cv.probabilities, labels, [names[i] for i in fit.rows]
        )
        test_report = (
            metrics.summarize(
                y_all[fit.test_rows],
                trained.probabilities(original[fit.test_rows]),
                labels,
                [names[i] for i in fit.test_rows],
            )
            if len(fit.test_rows)
            else None
        )
        # The accuracy that is reported and gated on: the held-out test split's when there is
        # one, else the cross-validated one.
        accuracy = test_report["accuracy"] if test_report else cv.accuracy
        gate = hp.assert_accuracy_at_least
        if gate is not None and accuracy < gate:
            raise AccuracyGateError("below_required_accuracy", accuracy=accuracy, required=gate)
        if progress:
            progress("saving", 0, 1, cv.accuracy)
        saving_started = time.perf_counter()
        shown = test_report or oof
        title = (
            f"test accuracy {accuracy:.1%} (N={shown['n']})"
            if test_report
            else f"{cv.k}-fold CV accuracy {accuracy:.1%} ± {cv.std:.1%} (N={shown['n']})"
        )
        with ThreadPoolExecutor(max_workers=1) as pool:
            # Drawn while the model is written: laying out 37 classes' labels takes ~0.4 s.
            plotted = pool.submit(
                metrics.plot_confusion,
                np.array(shown["confusion_matrix"]),
                labels,
                work / CONFUSION_FILE,
                title,
            )
            serving.save_retrained(
                backbone,
                trained.kernel,
                trained.bias,
                labels,
                work / SAVED_MODEL_DIR,
                home,
            )
            litert_report = litert.export_version(
                backbone,
                home,
                trained.kernel,
                trained.bias,
                work / litert.VERSION_DIR,
                calibration,
                check,
                y_all[check_rows],
                bottleneck_dir,
                num_threads=num_threads,
            )
            litert_report["checked_on"] = "test split" if test_report else "training photos"
            plotted.result()
        (work / LABELS_FILE).write_text("".join(f"{label}\n" for label in labels), "utf-8")
        np.savez(work / HEAD_FILE, kernel=trained.kernel, bias=trained.bias)
        open_set.save(work)
        report = {
            "test_accuracy": accuracy,
            "accuracy_source": "test_split" if test_report else "cross_validation",
            "cross_validation": cv.report(),
            "validation_accuracy": cv.accuracy,
            "n_test": len(fit.test_rows),
            "n_validation": len(fit.rows),
            "n_train": len(fit.rows),
            "n_train_vectors": len(train_y),
            "labels": labels,
            "display_names": [data.display_name(label) for label in labels],
            # Per class, confusion and mistakes: the out-of-fold answers (every photo once).
            "per_class": oof["per_class"],
            "confusion_matrix": oof["confusion_matrix"],
            "misclassified": oof["misclassified"],
            "test": test_report,
            # Species per class, temperature, "not one of my breeds" threshold, ECE before/after.
            "open_set": open_report,
            "best_step": cv.best_step,
            "history": {k: [round(float(v), 5) for v in h] for k, h in trained.history.items()},
            "extraction_seconds": round(extraction_seconds, 3),
            "training_seconds": round(training_seconds, 3),
            "saving_seconds": round(time.perf_counter() - saving_started, 3),
            "total_seconds": round(time.perf_counter() - started, 3),
            "backbone": {
                "handle": backbone.handle,
                "identity": backbone.identity,
                "image_size": backbone.image_size,
            },
            "auto": auto,
            "dataset_fingerprint": dataset.fingerprint,
            "bottlenecks": {"computed": ex.computed, "cached": ex.cached},
            "extraction_engine": engine,
            "litert": litert_report,
            "skipped": [list(s) for s in skipped],
            "hparams": asdict(hp),
        }
        (work / METRICS_FILE).write_text(json.dumps(report, indent=2, ensure_ascii=False), "utf-8")
        _publish(work, output_graph)
        if progress:
            progress("saving", 1, 1, cv.accuracy)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    if summaries_dir is not None:
        shutil.copytree(output_graph / LOGS_DIR, Path(summaries_dir), dirs_exist_ok=True)
    if output_labels is not None:
        Path(output_labels).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(output_graph / LABELS_FILE, output_labels)
    return TrainResult(
        output_dir=output_graph,
        labels=labels,
        test_accuracy=report["test_accuracy"],
        validation_accuracy=cv.accuracy,
        metrics=report,
        bottlenecks_computed=ex.computed,
        bottlenecks_cached=ex.cached,
        skipped=skipped,
    )


def _open_set(
    backbone: backbones.Backbone,
    ex: features.Extraction,
    fit: _Fit,
    train_views: list[features.View],
    y_all: np.ndarray,
    labels: list[str],
    hp: HParams,
) -> tuple[openset.OpenSet, dict]:
    """The version's species per class, temperature and open-set threshold (see openset_fit)."""
    views = [ex.vectors[v.key()][fit.rows] for v in train_views]
    weights = backbones.imagenet_head(backbone.module)
    inet = None if weights is None else crossval.softmax(views[0] @ weights[0] + weights[1])
    config = replace(
        head_config(hp), steps=fit.cv.best_step, l2=fit.cv.best_l2, early_stopping_patience=None
    )
    inputs = openset_fit.Inputs(views, y_all[fit.rows], inet, fit.cv, labels, config)
    return openset_fit.fit(inputs, hp.open_set_threshold)


def _held_out(
    dataset: data.Dataset, hp: HParams
) -> tuple[list[data.LabeledImage], list[data.LabeledImage]]:
    """(photos the served layer trains on, the test split): no test split unless asked for."""
    if hp.testing_percentage is None:
        return list(dataset.images), []
    splits = data.split_dataset(dataset, hp.testing_percentage, hp.validation_percentage)
    return splits["train"] + splits["validation"], splits["test"]


def _spread(rows: np.ndarray, k: int) -> np.ndarray:
    """At most k rows, evenly spread over `rows`."""
    return rows[:: max(1, len(rows) // k)][:k]


@dataclass
class _Fit:
    """One backbone's bottlenecks of a dataset and the cross-validation of a layer on them."""

    backbone: backbones.Backbone
    extraction: features.Extraction
    rows: np.ndarray  # photos the layer trains on (those that decoded)
    test_rows: np.ndarray  # the held-out test split (those that decoded)
    cv: crossval.CrossValidation
    cv_seconds: float


def _fit(
    backbone: backbones.Backbone,
    items: list[data.LabeledImage],
    n_fit: int,
    y: np.ndarray,
    labels: list[str],
    train_views: list[features.View],
    hp: HParams,
    bottleneck_dir: Path,
    progress: ProgressFn | None,
    embed: Callable[[np.ndarray], np.ndarray],
) -> _Fit:
    """Bottlenecks of `items` (the first `n_fit` with every training view), then k-fold CV."""
    views = [train_views] * n_fit + [[features.ORIGINAL]] * (len(items) - n_fit)
    ex = bottlenecks(
        backbone,
        items,
        views,
        bottleneck_dir,
        batch_size=hp.extraction_batch_size,
        progress=_report(progress, "bottlenecks"),
        embed=embed,
    )
    ok = np.flatnonzero(ex.ok)
    rows, test_rows = ok[ok < n_fit], ok[ok >= n_fit]
    _check_train_classes(labels, y[rows])
    started = time.perf_counter()
    mirrored = features.FLIP.key() in {v.key() for v in train_views}
    cv = crossval.cross_validate(
        [ex.vectors[v.key()][rows] for v in train_views],
        y[rows],
        crossval.stable_folds([items[i] for i in rows], hp.cv_folds),
        len(labels),
        head_config(hp),
        l2_grid(hp),
        mirror=ex.vectors[features.FLIP.key()][rows] if mirrored else None,
        on_steps=(lambda done, total: progress("training", done, total, None))
        if progress
        else None,
    )
    return _Fit(backbone, ex, rows, test_rows, cv, time.perf_counter() - started)


def choose_backbone(
    items: list[data.LabeledImage],
    y: np.ndarray,
    labels: list[str],
    hp: HParams,
    home: Path,
    bottleneck_dir: Path,
    progress: ProgressFn | None,
    embed: Callable[[backbones.Backbone], Callable[[np.ndarray], np.ndarray]],
) -> tuple[str, dict]:
    """`--architecture auto`: the candidate whose layer cross-validates best on these photos.

    Each candidate sees the originals only (mirrors and distorted copies are extracted later,
    for the chosen one), cached like any bottleneck, with one L2 value. A faster candidate
    within AUTO_TIE of the best accuracy wins: it answers every later photo sooner. Returns the
    handle and the report.
    """
    scores = {}
    # One L2 for every candidate (the grid's middle unless --l2 is given): a fair comparison at
    # a third of the cost; the chosen backbone's own cross-validation then tries the whole grid.
    one_l2 = replace(hp, l2=hp.l2 if hp.l2 is not None else L2_GRID[len(L2_GRID) // 2])
    for number, handle in enumerate(AUTO_CANDIDATES, start=1):
        started = time.perf_counter()
        backbone = backbones.load_backbone(handle, home)
        fit = _fit(
            backbone,
            items,
            len(items),
            y,
            labels,
            [features.ORIGINAL],
            one_l2,
            bottleneck_dir,
            _tagged(progress, f"{handle}#{number}/{len(AUTO_CANDIDATES)}"),
            embed(backbone),
        )
        scores[handle] = {
            "cv_accuracy": round(fit.cv.accuracy, 5),
            "cv_std": round(fit.cv.std, 5),
            "image_size": backbone.image_size,
            "seconds": round(time.perf_counter() - started, 3),
            "cv_seconds": round(fit.cv_seconds, 3),
        }
    best = max(scores, key=lambda h: scores[h]["cv_accuracy"])
    # Candidates are listed fastest first: the first within the tie margin of the best wins.
    chosen = next(
        h for h in scores if scores[h]["cv_accuracy"] >= scores[best]["cv_accuracy"] - AUTO_TIE
    )
    reason = (
        f"best {hp.cv_folds}-fold accuracy on the photos' originals"
        if chosen == best
        else f"within {AUTO_TIE:.1%} of {best}'s accuracy and faster"
    )
    return chosen, {
        "chosen": chosen,
        "reason": reason,
        "tie_margin": AUTO_TIE,
        "candidates": scores,
    }


def _relative(path: Path, root: Path) -> str:
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return Path(path).name


def _check_train_classes(labels: list[str], train_y: np.ndarray) -> None:
    counts = np.bincount(train_y, minlength=len(labels))
    empty = [labels[i] for i in np.flatnonzero(counts == 0)]
    if empty:
        raise data.DatasetError("no_training_images", classes=data.shown_names(empty))


def _publish(work: Path, target: Path) -> None:
    """Move a finished folder into place; an old folder of that name is replaced whole."""
    if not target.exists():
        os.replace(work, target)
        return
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    os.replace(target, old)
    os.replace(work, target)
    shutil.rmtree(old, ignore_errors=True)
