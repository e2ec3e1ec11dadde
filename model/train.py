"""Transfer-learning retrain: cached bottlenecks, a new softmax layer, a ready-to-serve folder.

`retrain()` is what both the `breedbot retrain` CLI and the worker's retrain task call.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np

from model import backbones, data, features, head, litert, metrics, serving
from model.hparams import HParams, validate
from model.problems import Problem

# (stage, done, total, latest validation accuracy); stages: bottlenecks, training, saving.
ProgressFn = Callable[[str, int, int, float | None], None]

LABELS_FILE = "retrained_labels.txt"
METRICS_FILE = "metrics.json"
CONFUSION_FILE = "confusion_matrix.png"
SAVED_MODEL_DIR = "saved_model"
LOGS_DIR = "logs"


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
        l2=hp.l2,
        label_smoothing=hp.label_smoothing,
        early_stopping_patience=hp.early_stopping_patience if hp.early_stopping else None,
        class_weighting=hp.class_weighting,
        seed=hp.seed,
    )


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
    if litert.resolve_engine(engine) == "tf":
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
        batch_size=batch_size,
        progress=progress,
    )


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
        splits = data.split_dataset(dataset, hp.testing_percentage, hp.validation_percentage)
        backbone = backbones.load_backbone(hp.tfhub_module, home)
        names = ("train", "validation", "test")
        items = [im for name in names for im in splits[name]]
        train_views = features.training_views(distortions(hp), hp.distortion_copies)
        views = [train_views] * len(splits["train"]) + [[features.ORIGINAL]] * (
            len(items) - len(splits["train"])
        )
        extract_started = time.perf_counter()
        engine = litert.resolve_engine(engine)
        ex = bottlenecks(
            backbone,
            items,
            views,
            bottleneck_dir,
            batch_size=hp.extraction_batch_size,
            progress=_report(progress, "bottlenecks"),
            embed=extractor(backbone, engine, home, num_threads),
        )
        extraction_seconds = time.perf_counter() - extract_started
        skipped = dataset.skipped + [
            (_relative(items[i].path, dataset.root), reason) for i, reason in ex.failures
        ]
        bounds = np.cumsum([0] + [len(splits[name]) for name in names])

        def ok_rows(k: int) -> np.ndarray:
            rows = np.arange(bounds[k], bounds[k + 1])
            return rows[ex.ok[rows]]

        train_rows = ok_rows(0)
        spread = train_rows[:: max(1, len(train_rows) // litert.CALIBRATION_IMAGES)]
        calibration_rows = spread[: litert.CALIBRATION_IMAGES]
        # Read now: the files of an uploaded zip are gone once this block ends.
        calibration_bytes = [items[i].path.read_bytes() for i in calibration_rows]
        test_bytes = [items[i].path.read_bytes() for i in ok_rows(2)]
    labels = dataset.classes
    index = {label: i for i, label in enumerate(labels)}

    def matrix(k: int, views_of_split: list[features.View]) -> tuple[np.ndarray, np.ndarray, list]:
        rows = ok_rows(k)
        kept = [items[i] for i in rows]
        x = np.concatenate([ex.vectors[v.key()][rows] for v in views_of_split])
        y = np.tile(np.array([index[im.label] for im in kept], np.int64), len(views_of_split))
        return x, y, kept

    train_x, train_y, train_kept = matrix(0, train_views)
    val_x, val_y, _ = matrix(1, [features.ORIGINAL])
    test_x, test_y, test_kept = matrix(2, [features.ORIGINAL])
    _check_train_classes(labels, train_y)
    calibration = litert.Photos(
        calibration_bytes,
        [items[i].sha256 for i in calibration_rows],
        ex.vectors[features.ORIGINAL.key()][calibration_rows],
    )
    test = litert.Photos(test_bytes, [im.sha256 for im in test_kept], test_x)

    work = Path(tempfile.mkdtemp(prefix=f".{output_graph.name}.tmp-", dir=output_graph.parent))
    try:
        train_started = time.perf_counter()
        trained = head.train_head(
            train_x,
            train_y,
            val_x,
            val_y,
            len(labels),
            head_config(hp),
            log_dir=work / LOGS_DIR,
            on_step=(lambda s, t, acc: progress("training", s, t, acc)) if progress else None,
        )
        training_seconds = time.perf_counter() - train_started
        val_pred = trained.probabilities(val_x).argmax(1)
        val_acc = float((val_pred == val_y).mean()) if len(val_y) else 0.0
        test_report = metrics.summarize(
            test_y,
            trained.probabilities(test_x),
            labels,
            [_relative(im.path, dataset.root) for im in test_kept],
        )
        gate = hp.assert_accuracy_at_least
        if gate is not None and test_report["accuracy"] < gate:
            raise AccuracyGateError(
                "below_required_accuracy", accuracy=test_report["accuracy"], required=gate
            )
        if progress:
            progress("saving", 0, 1, val_acc)
        saving_started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=1) as pool:
            # Drawn while the model is written: laying out 37 classes' labels takes ~0.4 s.
            plotted = pool.submit(
                metrics.plot_confusion,
                np.array(test_report["confusion_matrix"]),
                labels,
                work / CONFUSION_FILE,
                f"test accuracy {test_report['accuracy']:.1%} (N={test_report['n']})",
            )
            serving.save_retrained(
                backbone.module,
                backbone.identity,
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
                test,
                test_y,
                bottleneck_dir,
                num_threads=num_threads,
            )
            plotted.result()
        (work / LABELS_FILE).write_text("".join(f"{label}\n" for label in labels), "utf-8")
        report = {
            "test_accuracy": test_report["accuracy"],
            "validation_accuracy": val_acc,
            "n_test": test_report["n"],
            "n_validation": len(val_y),
            "n_train": len(train_kept),
            "n_train_vectors": len(train_y),
            "labels": labels,
            "display_names": [data.display_name(label) for label in labels],
            "per_class": test_report["per_class"],
            "confusion_matrix": test_report["confusion_matrix"],
            "misclassified": test_report["misclassified"],
            "best_step": trained.best_step,
            "history": {k: [round(float(v), 5) for v in h] for k, h in trained.history.items()},
            "extraction_seconds": round(extraction_seconds, 3),
            "training_seconds": round(training_seconds, 3),
            "saving_seconds": round(time.perf_counter() - saving_started, 3),
            "total_seconds": round(time.perf_counter() - started, 3),
            "backbone": {"handle": backbone.handle, "identity": backbone.identity},
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
            progress("saving", 1, 1, val_acc)
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
        validation_accuracy=val_acc,
        metrics=report,
        bottlenecks_computed=ex.computed,
        bottlenecks_cached=ex.cached,
        skipped=skipped,
    )


def _relative(path: Path, root: Path) -> str:
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return Path(path).name


def _check_train_classes(labels: list[str], train_y: np.ndarray) -> None:
    counts = np.bincount(train_y, minlength=len(labels))
    empty = [labels[i] for i in np.flatnonzero(counts == 0)]
    if empty:
        raise data.DatasetError("no_training_images", classes=", ".join(map(repr, empty)))


def _publish(work: Path, target: Path) -> None:
    """Move a finished folder into place; an old folder of that name is replaced whole."""
    if not target.exists():
        os.replace(work, target)
        return
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    os.replace(target, old)
    os.replace(work, target)
    shutil.rmtree(old, ignore_errors=True)
