"""Retrain benchmark per backbone and for `auto`: cross-validated accuracy, probe, cold/warm time.

Run: `.venv/bin/python bench/retrain_bench.py` (or `make bench`). Prints JSON and updates the
`retrain_bench` section of docs/BENCHMARKS.md. All figures come from one run on one machine.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import DATASETS, emit, forget_earlier_retrains, machine, peak_rss_mb
from model import backbones, data, features, litert, train
from model.hparams import AUTO, AUTO_CANDIDATES, HParams

HANDLES = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", AUTO)
# What the issue asked of the default choice.
GOALS = {"pets-dev": 0.89, "flowers-dev": 0.88}
COLD_GOAL_S = 45.0


def probe_cv(backbone: backbones.Backbone, source: Path, cache: Path, folds: int = 5) -> float:
    """Logistic regression (scikit-learn defaults) on the originals' vectors, stratified k-fold.

    The reference the issue measured against: the same protocol on every backbone.
    """
    dataset = data.load_dataset(source)
    views = [[features.ORIGINAL]] * len(dataset.images)
    x = train.bottlenecks(backbone, dataset.images, views, cache).vectors["original"]
    index = {c: i for i, c in enumerate(dataset.classes)}
    y = np.array([index[im.label] for im in dataset.images])
    hits = []
    for fit, test in StratifiedKFold(folds, shuffle=True, random_state=0).split(x, y):
        probe = LogisticRegression(max_iter=3000).fit(x[fit], y[fit])
        hits.append(float((probe.predict(x[test]) == y[test]).mean()))
    return float(np.mean(hits))


def forget_all(home: Path) -> None:
    """No int8 set or SavedModel template of any backbone survives: the next retrain is cold.

    What a backbone needs once per machine stays or is made here, outside the timings: its
    export and its LiteRT float backbone and gate files.
    """
    for handle in dict.fromkeys(AUTO_CANDIDATES + HANDLES[:-1]):
        backbone = backbones.load_backbone(handle, home)
        litert.features_file(backbone, home)
        litert.gate_file(backbone, home)
        forget_earlier_retrains(home, backbone.identity)


def timed(source: Path, out: Path, home: Path, cache: Path, hp: HParams) -> dict:
    """One in-process retrain (TensorFlow and the backbones already loaded)."""
    started, cpu = time.perf_counter(), time.process_time()
    result = train.retrain(source, out, hp, home=home, bottleneck_dir=cache)
    m = result.metrics
    return {
        "seconds": round(time.perf_counter() - started, 2),
        # CPU seconds of all threads: what a shared machine's load does not inflate.
        "cpu_s": round(time.process_time() - cpu, 2),
        "extraction_s": m["extraction_seconds"],
        "training_s": m["training_seconds"],
        "saving_s": m["saving_seconds"],
        "computed": result.bottlenecks_computed,
        "metrics": m,
    }


def bench_handle(name: str, handle: str, home: Path, tmp: Path) -> dict:
    """A cold then a warm retrain with defaults (but the backbone) on one dataset."""
    source = DATASETS / name
    hp = HParams(tfhub_module=handle)
    forget_all(home)
    cache = tmp / f"bottlenecks-{name}-{handle}"
    cold = timed(source, tmp / f"{name}-{handle}-cold", home, cache, hp)
    warm = timed(source, tmp / f"{name}-{handle}-warm", home, cache, hp)
    m = cold.pop("metrics")
    warm.pop("metrics")
    cv = m["cross_validation"]
    row = {
        "backbone": m["backbone"]["handle"],
        "image_size": m["backbone"]["image_size"],
        "images": m["n_train"],
        "cv_accuracy": cv["accuracy"],
        "cv_std": cv["std"],
        "cv_l2": cv["l2"],
        "cv_best_step": cv["best_step"],
        "cv_mirror_average_accuracy": cv["mirror_average_accuracy"],
        "int8_served": m["litert"]["served"] == "int8",
        "int8_agreement": m["litert"]["int8_agreement"],
        "cold": cold,
        "warm": warm,
    }
    if m.get("auto"):
        row["auto"] = m["auto"]
    return row


def markdown(result: dict) -> str:
    """The tables written into docs/BENCHMARKS.md."""
    rows = [
        f"## Retrain: {', '.join(result['handles'])} (`bench/retrain_bench.py`)",
        "",
        f"Machine: {result['machine']}, load average {result['load_average_before']} before, "
        f"{result['load_average_after']} after. Defaults of `HParams` but the backbone; one run "
        "each, in-process (TensorFlow and the backbones already loaded). Cold = empty "
        "bottleneck cache, no int8 set and no SavedModel template of any backbone in "
        "BREEDBOT_HOME (the backbone exports and their LiteRT float files are there); warm = "
        "the same command again. CV = the retrain's own 5-fold cross-validation over all "
        "photos (content-hashed folds; L2 and steps chosen on the folds), ± the spread over "
        "folds. Mirror-avg = the same out-of-fold layers answering the average of each photo "
        "and its mirror (twice the backbone work per photo). Probe = logistic regression, "
        "stratified 5-fold on the originals' vectors (the issue's reference).",
        "",
        "| dataset | backbone | side | CV | mirror-avg | probe 5-fold | cold s (CPU s) "
        "| warm s (CPU s) | cold extraction s | warm training s | served |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, by_handle in result["datasets"].items():
        for handle, r in by_handle.items():
            if handle == "probe":
                continue
            label = f"auto → {r['backbone']}" if handle == AUTO else handle
            probe = by_handle["probe"].get(handle)
            rows.append(
                f"| {name} | {label} | {r['image_size']} "
                f"| {r['cv_accuracy']:.1%} ± {r['cv_std']:.1%} "
                f"| {r['cv_mirror_average_accuracy']:.1%} "
                f"| {'-' if probe is None else f'{probe:.1%}'} "
                f"| {r['cold']['seconds']} ({r['cold']['cpu_s']}) "
                f"| {r['warm']['seconds']} ({r['warm']['cpu_s']}) "
                f"| {r['cold']['extraction_s']} | {r['warm']['training_s']} "
                f"| {'int8' if r['int8_served'] else 'float'} |"
            )
    rows += [
        "",
        "Probe 5-fold per backbone (logistic regression on the originals): "
        + "; ".join(
            f"{name}: " + ", ".join(f"{h} {p:.1%}" for h, p in by_handle["probe"].items())
            for name, by_handle in result["datasets"].items()
        )
        + ".",
    ]
    chosen = {n: r[AUTO]["auto"] for n, r in result["datasets"].items() if AUTO in r}
    if chosen:
        rows += [
            "",
            "`auto` chose (candidates' CV on the originals at L2 1e-3, and their seconds):",
        ]
        rows.append("")
    for name, auto in chosen.items():
        if auto:
            scores = ", ".join(
                f"{h} {c['cv_accuracy']:.1%} ({c['seconds']} s)"
                for h, c in auto["candidates"].items()
            )
            rows.append(f"- {name}: **{auto['chosen']}** ({auto['reason']}); {scores}")
    rows += ["", f"Peak RSS of the bench process: {result['peak_rss_mb']:.0f} MB."]
    return "\n".join(rows)


def main() -> None:
    """Run the benchmark and record it."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--home", type=Path, help="BREEDBOT_HOME with the backbone exports")
    parser.add_argument("--datasets", nargs="+", default=["pets-dev", "flowers-dev"])
    parser.add_argument("--handles", nargs="+", default=list(HANDLES))
    parser.add_argument(
        "--section", default="retrain_bench", help="docs/BENCHMARKS.md section to write"
    )
    args = parser.parse_args()
    load_before = [round(x, 2) for x in os.getloadavg()]
    home = args.home or backbones.default_home()
    per_dataset: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="retrain-bench-") as tmp_name:
        tmp = Path(tmp_name)
        for name in args.datasets:
            rows = {handle: bench_handle(name, handle, home, tmp) for handle in args.handles}
            # Every backbone a run extracted the originals of, from that run's cache.
            caches = {h: h for h in args.handles if h != AUTO}
            if AUTO in args.handles:
                caches.update({h: caches.get(h, AUTO) for h in AUTO_CANDIDATES})
            rows["probe"] = {
                handle: round(
                    probe_cv(
                        backbones.load_backbone(handle, home),
                        DATASETS / name,
                        tmp / f"bottlenecks-{name}-{run}",
                    ),
                    4,
                )
                for handle, run in caches.items()
            }
            per_dataset[name] = rows
    result = {
        "bench": "retrain",
        "machine": machine(),
        "load_average_before": load_before,
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "handles": args.handles,
        "goals": {"cv": GOALS, "cold_pets_dev_s": COLD_GOAL_S},
        "datasets": per_dataset,
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }
    emit(args.section, result, markdown(result))


if __name__ == "__main__":
    main()
