"""Retrain benchmark: cold vs warm time, extraction vs raw forward rate, accuracy vs a linear probe.

Run: `.venv/bin/python bench/retrain_bench.py` (or `make bench`). Prints JSON and updates the
`retrain_bench` section of docs/BENCHMARKS.md. All ratios come from one run on one machine.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, train_test_split

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import DATASETS, emit, forget_earlier_retrains, machine, peak_rss_mb
from model import backbones, data, features, head, train
from model.hparams import HParams


def raw_forward_rate(
    backbone: backbones.Backbone, home: Path, batch: int = 32, reps: int = 4
) -> float:
    """Batched images/s of the forward pass extraction uses (LiteRT float on a CPU, else TF),
    on random input: no decoding, no cache."""
    forward = train.extractor(backbone, home=home)
    x = np.random.default_rng(0).random((batch, 224, 224, 3), np.float32)
    forward(x)  # warm-up (and the one-time LiteRT conversion)
    started = time.perf_counter()
    for _ in range(reps):
        forward(x)
    return batch * reps / (time.perf_counter() - started)


def timed_retrain(
    source: Path, out: Path, home: Path, cache: Path, hp: HParams
) -> tuple[float, train.TrainResult]:
    """Wall time of one in-process retrain (TensorFlow already imported)."""
    started = time.perf_counter()
    result = train.retrain(source, out, hp, home=home, bottleneck_dir=cache)
    return time.perf_counter() - started, result


def cross_validated(
    backbone: backbones.Backbone,
    source: Path,
    cache: Path,
    hp: HParams,
    folds: int = 5,
    seeds: tuple[int, ...] = (0, 1, 2),
) -> dict:
    """5-fold accuracy of breedbot's head (defaults) and of logistic regression.

    Both see the same training images and the same test fold; breedbot holds a tenth of its
    training images out for early stopping, as retrain does with its validation split. The
    head's figure is the mean over `seeds`: one seed moves it by about half a point on pets-dev.
    """
    dataset = data.load_dataset(source)
    views = [[features.ORIGINAL, features.FLIP]] * len(dataset.images)
    ex = train.bottlenecks(backbone, dataset.images, views, cache)
    labels = {c: i for i, c in enumerate(dataset.classes)}
    y = np.array([labels[im.label] for im in dataset.images])
    orig, flip = ex.vectors["original"], ex.vectors["flip"]
    ours, probe = [], []
    config = train.head_config(hp)
    splitter = StratifiedKFold(folds, shuffle=True, random_state=0)
    for fit_idx, test_idx in splitter.split(orig, y):
        tr, va = train_test_split(fit_idx, test_size=0.1, stratify=y[fit_idx], random_state=0)
        x_fit = np.concatenate([orig[tr], flip[tr]]) if hp.flip_left_right else orig[tr]
        y_fit = np.tile(y[tr], 2 if hp.flip_left_right else 1)
        for seed in seeds:
            h = head.train_head(
                x_fit, y_fit, orig[va], y[va], len(labels), replace(config, seed=seed)
            )
            ours.append(float((h.probabilities(orig[test_idx]).argmax(1) == y[test_idx]).mean()))
        lr = LogisticRegression(max_iter=3000).fit(orig[tr], y[tr])
        probe.append(float((lr.predict(orig[test_idx]) == y[test_idx]).mean()))
    return {
        "retrain_cv": float(np.mean(ours)),
        "probe_cv": float(np.mean(probe)),
        "folds": folds,
        "retrain_cv_seeds": len(seeds),
    }


def same_split_probe(result: train.TrainResult, backbone: backbones.Backbone, cache: Path) -> float:
    """Logistic regression on the very train/test split the retrain used."""
    dataset = data.load_dataset(Path(result.metrics["source"]))
    hp = HParams(**result.metrics["hparams"])
    splits = data.split_dataset(dataset, hp.testing_percentage, hp.validation_percentage)
    labels = {c: i for i, c in enumerate(result.labels)}

    def xy(items: list[data.LabeledImage]) -> tuple[np.ndarray, np.ndarray]:
        ex = train.bottlenecks(backbone, items, [[features.ORIGINAL]] * len(items), cache)
        return ex.vectors["original"], np.array([labels[im.label] for im in items])

    x_tr, y_tr = xy(splits["train"])
    x_te, y_te = xy(splits["test"])
    lr = LogisticRegression(max_iter=3000).fit(x_tr, y_tr)
    return float((lr.predict(x_te) == y_te).mean())


def _median_run(
    runs: list[tuple[float, train.TrainResult]],
) -> tuple[float, train.TrainResult]:
    return sorted(runs, key=lambda run: run[0])[len(runs) // 2]


REPEATS = 3


def bench_dataset(
    name: str, backbone: backbones.Backbone, home: Path, tmp: Path, repeats: int = REPEATS
) -> dict:
    """Cold and warm retrain with defaults on one shared dataset, plus the accuracy comparison.

    Times and rates are medians of `repeats` runs: one run on these machines varies by up to a
    third. Each cold run starts from an empty bottleneck cache and nothing in BREEDBOT_HOME but
    the backbone; the warm runs repeat the last cold one.
    """
    source = DATASETS / name
    hp = HParams()
    raws, colds = [], []
    for i in range(repeats):
        raws.append(raw_forward_rate(backbone, home))  # right before the cold run: the same load
        forget_earlier_retrains(home, backbone.identity)
        cache = tmp / f"bottlenecks-{name}-{i}"
        colds.append(timed_retrain(source, tmp / f"{name}-cold-{i}", home, cache, hp))
    warms = [
        timed_retrain(source, tmp / f"{name}-warm-{i}", home, cache, hp) for i in range(repeats)
    ]
    (cold_s, cold), (warm_s, warm) = _median_run(colds), _median_run(warms)
    cold.metrics["source"] = str(source)
    computed = cold.bottlenecks_computed
    extraction = statistics.median(
        run.bottlenecks_computed / run.metrics["extraction_seconds"] for _, run in colds
    )
    probe = same_split_probe(cold, backbone, cache)
    cv = cross_validated(backbone, source, cache, hp)
    return {
        "images": cold.metrics["n_train"] + cold.metrics["n_validation"] + cold.metrics["n_test"],
        "repeats": repeats,
        "cold_retrain_s": round(cold_s, 2),
        "warm_retrain_s": round(warm_s, 2),
        "warm_speedup": round(cold_s / warm_s, 2),
        "cold_runs_s": [round(s, 2) for s, _ in colds],
        "warm_runs_s": [round(s, 2) for s, _ in warms],
        "warm_bottlenecks_computed": warm.bottlenecks_computed,
        "cold_bottlenecks_computed": computed,
        "extraction_images_per_s": round(extraction, 1),
        "raw_forward_images_per_s": round(statistics.median(raws), 1),
        "warm_breakdown_s": {
            "extraction": warm.metrics["extraction_seconds"],
            "training": warm.metrics["training_seconds"],
            "saving": warm.metrics["saving_seconds"],
            "total_in_library": warm.metrics["total_seconds"],
        },
        "test_accuracy": round(cold.test_accuracy, 4),
        "n_test": cold.metrics["n_test"],
        "probe_same_split_accuracy": round(probe, 4),
        **{k: round(v, 4) if isinstance(v, float) else v for k, v in cv.items()},
    }


def markdown(result: dict) -> str:
    """The table written into docs/BENCHMARKS.md."""
    rows = [
        "## Retrain (`bench/retrain_bench.py`)",
        "",
        f"Machine: {result['machine']}. Backbone: {result['backbone']}, defaults of `HParams`. "
        f"Times and rates are medians of {result['repeats']} runs, in-process (TensorFlow and "
        "the backbone already loaded). Cold = empty bottleneck cache, no int8 backbone "
        "calibrated on this data and no SavedModel template for this number of classes; warm = "
        "the same command again. Raw forward = the backbone alone on random batches of 32, "
        "through the engine extraction uses (LiteRT float on a CPU), measured just before each "
        "cold run. Extraction counts every view (original and mirror). A warm run still trains "
        "and writes a whole version: SavedModel (the cold run's graph with the new head's "
        "weights), LiteRT float and int8 (the head converted, the backbone and gate linked from "
        "BREEDBOT_HOME, both measured on the test split from cached features), metrics and "
        "plots. Retrain 5-fold is the mean over seeds 0, 1 and 2 of the same folds.",
        "",
        "| dataset | images | cold s | warm s | warm speed-up | extraction img/s | raw forward "
        "img/s | ratio | test acc (N) | probe, same split | retrain 5-fold | probe 5-fold |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in result["datasets"].items():
        ratio = r["extraction_images_per_s"] / r["raw_forward_images_per_s"]
        rows.append(
            f"| {name} | {r['images']} | {r['cold_retrain_s']} | {r['warm_retrain_s']} "
            f"| {r['warm_speedup']}× | {r['extraction_images_per_s']} "
            f"| {r['raw_forward_images_per_s']} | {ratio:.2f}× "
            f"| {r['test_accuracy']:.1%} ({r['n_test']}) | {r['probe_same_split_accuracy']:.1%} "
            f"| {r['retrain_cv']:.1%} | {r['probe_cv']:.1%} |"
        )
    rows.append("")
    rows.append(f"Peak RSS of the bench process: {result['peak_rss_mb']:.0f} MB.")
    return "\n".join(rows)


def main() -> None:
    """Run the benchmark and record it."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--home", type=Path, help="BREEDBOT_HOME with the backbone export")
    parser.add_argument("--datasets", nargs="+", default=["flowers-dev", "pets-dev"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="retrain-bench-") as tmp_name:
        tmp = Path(tmp_name)
        home = args.home or backbones.default_home()
        backbone = backbones.load_backbone(backbones.DEFAULT_BACKBONE, home)
        per_dataset = {name: bench_dataset(name, backbone, home, tmp) for name in args.datasets}
    result = {
        "bench": "retrain",
        "machine": machine(),
        "backbone": backbones.DEFAULT_BACKBONE,
        "repeats": REPEATS,
        "datasets": per_dataset,
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }
    emit("retrain_bench", result, markdown(result))


if __name__ == "__main__":
    main()
