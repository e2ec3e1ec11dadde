"""Engine benchmark: TensorFlow vs LiteRT float vs LiteRT int8 on the same machine, in one run.

Run: `.venv/bin/python bench/engine_bench.py` (add `--home DIR` to reuse a backbone export).
Prints JSON and updates the `engine_bench` section of docs/BENCHMARKS.md with:
photos/s at batch 1 and 32 per engine (real photos, model only: pixels in, answers out),
hidden-split accuracy per engine on the shared dev sets, and cold retrain time on pets-dev
through each extraction engine. Queue throughput per engine needs a worker per engine:
bench/service_bench.py measures it (`INFERENCE_ENGINE` set to each).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import DATASETS, emit, forget_earlier_retrains, machine, peak_rss_mb
from model import backbones, data, features, litert, train
from model.hparams import HParams
from model.predict import load_classifier
from model.runtime import images as imagelib
from model.runtime.classifier import Classifier

ENGINES = {
    "tf": ("tf", "auto"),
    "litert-float": ("litert", "float"),
    "litert-int8": ("litert", "int8"),
}
GOALS = {"litert-float": 3.5, "litert-int8": 6.0}


def classifiers(version: Path, home: Path) -> dict[str, Classifier]:
    """The version loaded once per engine."""
    return {
        name: load_classifier(version, home=home, engine=engine, precision=precision)
        for name, (engine, precision) in ENGINES.items()
    }


def photos_per_second(clf: Classifier, pixels: np.ndarray, batch: int) -> float:
    """Model-only rate: whole-batch predict_pixels calls over the same real photos."""
    clf.predict_pixels(pixels[:batch])  # warm-up (tracing, interpreter allocation)
    started = time.perf_counter()
    for start in range(0, len(pixels) - batch + 1, batch):
        clf.predict_pixels(pixels[start : start + batch])
    return (len(pixels) // batch * batch) / (time.perf_counter() - started)


def throughput(models: dict[str, Classifier], pixels: np.ndarray, rounds: int) -> dict:
    """Median and best photos/s per engine and batch size, engines interleaved.

    Interleaving makes every engine see the same background load; the best round is the closest
    to an idle machine when other processes share the cores.
    """
    samples: dict[str, dict[int, list[float]]] = {n: {1: [], 32: []} for n in models}
    for _ in range(rounds):
        for name, clf in models.items():
            for batch in (1, 32):
                samples[name][batch].append(photos_per_second(clf, pixels, batch))
    return {
        name: {
            **{f"batch_{b}": round(statistics.median(v), 1) for b, v in by_batch.items()},
            **{f"best_batch_{b}": round(max(v), 1) for b, v in by_batch.items()},
        }
        for name, by_batch in samples.items()
    }


# Versions whose hidden-split accuracy is measured hold a test split out.
HELD_OUT = HParams(testing_percentage=10, tfhub_module=backbones.DEFAULT_BACKBONE)
BACKBONES = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
_RSS = """
import resource, sys
from pathlib import Path
from model.predict import load_classifier
clf = load_classifier(Path(sys.argv[1]), home=Path(sys.argv[2]), engine="litert")
clf.warm_up()
blobs = [p.read_bytes() for p in sorted(Path(sys.argv[3]).glob("*/*.jpg"))[:16]]
for blob in blobs:
    clf.predict([blob])
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def single_photo_ms(clf: Classifier, blobs: list[bytes]) -> dict:
    """Latency of one photo at a time through predict() (decode included): p50 and p95 in ms."""
    clf.predict(blobs[:1])
    times = []
    for blob in blobs:
        started = time.perf_counter()
        clf.predict([blob])
        times.append((time.perf_counter() - started) * 1e3)
    return {
        "p50": round(float(np.percentile(times, 50)), 1),
        "p95": round(float(np.percentile(times, 95)), 1),
    }


def serving_rss_mb(version: Path, home: Path) -> float:
    """Peak RSS of a fresh process that loads a version on LiteRT and answers 16 photos."""
    out = subprocess.run(
        [sys.executable, "-c", _RSS, str(version), str(home), str(DATASETS / "pets-dev")],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return round(float(out.strip().splitlines()[-1]), 1)


def per_backbone(home: Path, tmp: Path, cache: Path, rounds: int, n_photos: int) -> dict:
    """Each backbone's pets-dev version (test split held out): LiteRT speed, latency, RSS, int8."""
    source = DATASETS / "pets-dev"
    files = sorted(source.glob("*/*.jpg"))[:: max(1, 599 // n_photos)][:n_photos]
    blobs = [f.read_bytes() for f in files]
    result = {}
    for handle in BACKBONES:
        hp = HParams(tfhub_module=handle, testing_percentage=10)
        version = tmp / f"pets-{handle}"
        retrained = train.retrain(source, version, hp, home=home, bottleneck_dir=cache)
        lite = retrained.metrics["litert"]
        models = {
            name: load_classifier(version, home=home, engine="litert", precision=p)
            for name, p in (("litert-float", "float"), ("litert-int8", "int8"))
        }
        size = models["litert-float"].image_size
        pixels = imagelib.to_float(np.stack([imagelib.decode_image(b, size) for b in blobs]))
        served = load_classifier(version, home=home)
        result[handle] = {
            "image_size": size,
            "photos_per_s": throughput(models, pixels, rounds),
            "served": served.engine,
            "single_photo_ms": single_photo_ms(served, blobs),
            "test_accuracy": {p: lite[p]["test_accuracy"] for p in litert.PRECISIONS},
            "int8_agreement": lite["int8_agreement"],
            "n_test": lite["n_test"],
            "serving_rss_mb": serving_rss_mb(version, home),
        }
    return result


def hidden_split_accuracy(models: dict[str, Classifier], source: Path, hp: HParams) -> dict:
    """Top-1 accuracy of each engine on the version's own test split, and agreement with tf."""
    dataset = data.load_dataset(source)
    test = data.split_dataset(dataset, hp.testing_percentage, hp.validation_percentage)["test"]
    blobs = [im.path.read_bytes() for im in test]
    top1 = {
        name: [p.top_k[0].label for p in clf.predict(blobs, top_k=1)]
        for name, clf in models.items()
    }
    truth = [im.label for im in test]
    return {
        name: {
            "accuracy": round(float(np.mean([a == b for a, b in zip(t, truth, strict=True)])), 4),
            "agreement_with_tf": round(
                float(np.mean([a == b for a, b in zip(t, top1["tf"], strict=True)])), 4
            ),
        }
        for name, t in top1.items()
    } | {"n_test": len(test)}


def cold_retrain(source: Path, out: Path, home: Path, cache: Path, engine: str) -> dict:
    """One retrain with an empty bottleneck cache through one extraction engine."""
    backbone = backbones.load_backbone(HELD_OUT.tfhub_module, home)
    forget_earlier_retrains(home, backbone.identity)  # else the second engine reuses the first's
    started = time.perf_counter()
    result = train.retrain(source, out, HELD_OUT, home=home, bottleneck_dir=cache, engine=engine)
    m = result.metrics
    return {
        "total_s": round(time.perf_counter() - started, 2),
        "extraction_s": m["extraction_seconds"],
        "litert_export_s": m["litert"]["convert_seconds"],
        "bottlenecks_computed": result.bottlenecks_computed,
        "test_accuracy": round(result.test_accuracy, 4),
        "int8_served": m["litert"]["served"] == "int8",
    }


def decode_seconds(source: Path) -> float:
    """Wall time to decode every photo of a dataset as extraction does (2 threads, no model)."""
    paths = [im.path for im in data.load_dataset(source).images]
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=2) as pool:
        for _ in features.decode_many(paths, pool):
            pass
    return time.perf_counter() - started


def backbones_markdown(result: dict) -> str:
    """The per-backbone table written into docs/BENCHMARKS.md."""
    rows = [
        "## Backbones on LiteRT (`bench/engine_bench.py`)",
        "",
        f"Machine: {result['machine']}; LiteRT {result['litert_threads']} threads; load average "
        f"{result['load_average_before']} before, {result['load_average_after']} after. "
        "Per backbone: a pets-dev version (10 % test split held out) on LiteRT, photos/s "
        "model-only (median of the rounds, photos decoded at the backbone's side), one photo "
        "at a time through predict() with decoding (what the worker does for a lone photo), "
        "the precision the version serves (its int8 decision) and the peak RSS of a fresh "
        "process that loads the version and answers 16 photos (TensorFlow imported, as the "
        "worker does today).",
        "",
        "| backbone | side | float b1 / b32 | int8 b1 / b32 | served | one photo p50 / p95 ms "
        "| test acc float / int8 (N), agreement | RSS MB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for handle, b in result["backbones"].items():
        f, q = b["photos_per_s"]["litert-float"], b["photos_per_s"]["litert-int8"]
        acc = b["test_accuracy"]
        rows.append(
            f"| {handle} | {b['image_size']} | {f['batch_1']} / {f['batch_32']} "
            f"| {q['batch_1']} / {q['batch_32']} | {b['served']} "
            f"| {b['single_photo_ms']['p50']} / {b['single_photo_ms']['p95']} "
            f"| {acc['float']:.1%} / {acc['int8']:.1%} ({b['n_test']}), "
            f"{b['int8_agreement']:.0%} | {b['serving_rss_mb']:.0f} |"
        )
    return "\n".join(rows)


def markdown(result: dict) -> str:
    """The tables written into docs/BENCHMARKS.md."""
    rate = result["photos_per_s"]
    tf1 = rate["tf"]["batch_1"]
    rows = [
        "## Engines (`bench/engine_bench.py`)",
        "",
        f"Machine: {result['machine']}; LiteRT {result['litert_threads']} threads; load average "
        f"{result['load_average_before']} before, {result['load_average_after']} after. "
        "Photos/s are model-only (decoded real pets-dev photos in, answers out; backbone, head "
        f"and pet gate), median and best of {result['rounds']} interleaved rounds.",
        "",
        "| engine | batch 1 photos/s | batch 32 photos/s | batch 1 vs tf | best-round batch 1 "
        "/ 32 | best batch 1 vs tf | goal |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in rate.items():
        goal = f"≥ {GOALS[name]}×" if name in GOALS else "-"
        rows.append(
            f"| {name} | {r['batch_1']} | {r['batch_32']} | {r['batch_1'] / tf1:.2f}× "
            f"| {r['best_batch_1']} / {r['best_batch_32']} "
            f"| {r['best_batch_1'] / rate['tf']['best_batch_1']:.2f}× | {goal} |"
        )
    rows += [
        "",
        "Hidden-split (test) accuracy of a version retrained with a 10 % test split held out, per "
        "engine "
        "(agreement = top-1 equal to tf):",
        "",
        "| dataset | N | tf | litert-float (agreement) | litert-int8 (agreement) | served |",
        "|---|---|---|---|---|---|",
    ]
    for name, acc in result["accuracy"].items():
        cells = [f"{acc['tf']['accuracy']:.1%}"] + [
            f"{acc[e]['accuracy']:.1%} ({acc[e]['agreement_with_tf']:.0%})"
            for e in ("litert-float", "litert-int8")
        ]
        rows.append(f"| {name} | {acc['n_test']} | {' | '.join(cells)} | {acc['served']} |")
    cold = result["cold_retrain_pets_dev"]
    rows += [
        "",
        "Cold retrain on pets-dev (empty bottleneck cache, no int8 conversion for this data, no "
        "SavedModel template; backbone export and LiteRT float backbone already in "
        "BREEDBOT_HOME; in-process, "
        "TensorFlow imported). Every retrain also writes the version's LiteRT float + int8 "
        "files, calibrating the int8 backbone, and measures them (export column).",
        "",
        "| extraction | total s | extraction s | LiteRT export s | vectors | test acc |",
        "|---|---|---|---|---|---|",
    ]
    for engine, c in cold.items():
        if isinstance(c, dict):
            rows.append(
                f"| {engine} | {c['total_s']} | {c['extraction_s']} | {c['litert_export_s']} "
                f"| {c['bottlenecks_computed']} | {c['test_accuracy']:.1%} |"
            )
    rows += [
        "",
        f"Cold retrain speed-up (tf / litert): **{cold['speedup_total']}×** in total, "
        f"**{cold['speedup_extraction']}×** for extraction (goal ≥ 2×). Decoding the 599 photos "
        f"alone (2 threads, no model) takes {cold['decode_only_s']} s of either extraction. "
        f"One-time conversion of the backbone to LiteRT: {result['backbone_conversion_s']} s.",
        "",
        "Queue throughput per engine: see the Service section (bench/service_bench.py runs "
        "one worker per engine, `INFERENCE_ENGINE=litert` and `tf`).",
        "",
        f"Peak RSS of the bench process: {result['peak_rss_mb']:.0f} MB.",
    ]
    return "\n".join(rows)


def main() -> None:
    """Run the benchmark and record it."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--home", type=Path, help="BREEDBOT_HOME with the backbone export")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--photos", type=int, default=64, help="photos per throughput round")
    parser.add_argument("--bottlenecks", type=Path, help="a bottleneck cache to reuse")
    parser.add_argument(
        "--backbones-only", action="store_true", help="only the per-backbone section"
    )
    args = parser.parse_args()
    load_before = [round(x, 2) for x in os.getloadavg()]
    home = args.home or backbones.default_home()
    with tempfile.TemporaryDirectory(prefix="engine-bench-") as tmp_name:
        tmp = Path(tmp_name)
        by_backbone = per_backbone(
            home, tmp, args.bottlenecks or tmp / "bn-all", args.rounds, args.photos
        )
    per = {
        "bench": "engine_backbones",
        "machine": machine(),
        "litert_threads": os.cpu_count(),
        "load_average_before": load_before,
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "backbones": by_backbone,
    }
    emit("engine_backbones", per, backbones_markdown(per))
    if args.backbones_only:
        return
    load_before = [round(x, 2) for x in os.getloadavg()]
    backbone = backbones.load_backbone(backbones.DEFAULT_BACKBONE, home)
    converted = litert.home_dir(home, backbone.identity) / litert.FEATURES_FILE
    started = time.perf_counter()
    converted.unlink(missing_ok=True)
    litert.features_runner(backbone, home)
    conversion_s = time.perf_counter() - started
    with tempfile.TemporaryDirectory(prefix="engine-bench-") as tmp_name:
        tmp = Path(tmp_name)
        source = DATASETS / "pets-dev"
        cold = {
            engine: cold_retrain(source, tmp / f"pets-{engine}", home, tmp / f"bn-{engine}", engine)
            for engine in ("tf", "litert")
        }
        cold["speedup_total"] = round(cold["tf"]["total_s"] / cold["litert"]["total_s"], 2)
        cold["decode_only_s"] = round(decode_seconds(source), 2)
        cold["speedup_extraction"] = round(
            cold["tf"]["extraction_s"] / cold["litert"]["extraction_s"], 2
        )
        versions = {"pets-dev": tmp / "pets-litert"}
        versions["flowers-dev"] = train.retrain(
            DATASETS / "flowers-dev", tmp / "flowers", HELD_OUT, home=home
        ).output_dir
        accuracy = {}
        for name, version in versions.items():
            acc = hidden_split_accuracy(classifiers(version, home), DATASETS / name, HELD_OUT)
            acc["served"] = load_classifier(version, home=home).engine
            accuracy[name] = acc
        files = sorted(source.glob("*/*.jpg"))[:: max(1, 599 // args.photos)][: args.photos]
        pixels = imagelib.to_float(np.stack([imagelib.decode_image(f.read_bytes()) for f in files]))
        rate = throughput(classifiers(versions["pets-dev"], home), pixels, args.rounds)
    result = {
        "bench": "engine",
        "machine": machine(),
        "litert_threads": os.cpu_count(),
        "load_average_before": load_before,
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "rounds": args.rounds,
        "photos_per_s": rate,
        "ratios_vs_tf_batch_1": {
            name: round(r["batch_1"] / rate["tf"]["batch_1"], 2) for name, r in rate.items()
        },
        "accuracy": accuracy,
        "cold_retrain_pets_dev": cold,
        "backbone_conversion_s": round(conversion_s, 2),
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }
    emit("engine_bench", result, markdown(result))


if __name__ == "__main__":
    main()
