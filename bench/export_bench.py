"""Export benchmark: the portable files (ONNX, LiteRT float, LiteRT int8) against breedbot itself.

Run: `.venv/bin/python bench/export_bench.py` (add `--home DIR` to reuse a backbone export).
Trains a brief version per backbone on a few pets-dev classes, exports it, and measures each
file's size, its CPU latency for one photo (uint8 pixels in, probabilities out, after a warm-up)
and its answers on unseen photos against breedbot's own (LiteRT, float and served precision).
Prints JSON, writes bench/results/export_bench.json and the `export_bench` section of
docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import DATASETS, emit, machine
from model import export, train
from model.hparams import HParams
from model.portable import PortableModel
from model.predict import load_classifier
from model.runtime.images import decode_image

CLASSES = ["Abyssinian", "Bengal", "beagle", "pug"]
TRAIN, CHECK = 10, 8  # photos per class: trained on, then answered
RUNS = 50
RESULTS = Path(__file__).resolve().parent / "results" / "export_bench.json"


def _version(handle: str, home: Path, work: Path) -> Path:
    for c in CLASSES:
        (work / "photos" / c).mkdir(parents=True)
        for p in sorted((DATASETS / "pets-dev" / c).glob("*.jpg"))[:TRAIN]:
            (work / "photos" / c / p.name).symlink_to(p)
    hp = HParams(how_many_training_steps=100, eval_step_interval=50, tfhub_module=handle)
    return train.retrain(work / "photos", work / "v", hp, home=home).output_dir


def _latency_ms(model: PortableModel, pixels: np.ndarray) -> float:
    model.answer(pixels)  # warm-up: the first call plans the graph
    times = []
    for _ in range(RUNS):
        started = time.perf_counter()
        model.answer(pixels)
        times.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(times), 2)


def _measure(handle: str, home: Path, work: Path) -> dict:
    version = _version(handle, home, work)
    source = export.load_source(version, home=home)
    files = export.export_portable(source, work / "out", ("tflite", "onnx"))
    float_source = dataclasses.replace(source, precision="float")
    files += export.export_portable(float_source, work / "out-float")
    photos = [
        p
        for c in CLASSES
        for p in sorted((DATASETS / "pets-dev" / c).glob("*.jpg"))[TRAIN:][:CHECK]
    ]
    truth = {}
    for precision in ("float", source.precision):
        clf = load_classifier(version, home=home, engine="litert", precision=precision)
        preds = clf.predict([p.read_bytes() for p in photos], top_k=len(clf.labels))
        truth[precision] = np.array(
            [[{g.label: g.probability for g in p.top_k}[x] for x in clf.labels] for p in preds]
        )
    rows = {}
    for path in (f for f in files if f.suffix in (".onnx", ".tflite")):
        model = PortableModel(path)
        got = np.array([model.answer_bytes(p.read_bytes()).probabilities for p in photos])
        precision = "int8" if "int8" in path.name else "float"
        rows[path.name] = {
            "bytes": path.stat().st_size,
            "latency_ms": _latency_ms(
                model, decode_image(photos[0].read_bytes(), model.image_size)
            ),
            "top1_agreement": float((got.argmax(1) == truth[precision].argmax(1)).mean()),
            "max_abs_diff": float(np.abs(got - truth[precision]).max()),
            "against": f"breedbot litert {precision}",
        }
    return {"served": source.precision, "photos": len(photos), "files": rows}


def _markdown(result: dict) -> str:
    lines = [
        "## Portable exports: ONNX and LiteRT against breedbot (`bench/export_bench.py`)",
        "",
        f"Machine: {result['machine']}. A version per backbone trained 100 steps on "
        f"{TRAIN} photos of each of {', '.join(CLASSES)}; answered on up to {CHECK} more of each "
        f"({result['photos']} unseen photos). Latency: median of {RUNS} single-photo calls on "
        "pixels already decoded (uint8 in, probabilities out), default threads. Agreement: "
        "top-1 against breedbot's own LiteRT answers in the same precision (int8: breedbot "
        "serves full int8, the export is dynamic-range int8).",
        "",
        "| backbone | file | MB | latency ms | top-1 agreement | max abs diff |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for handle, row in result["backbones"].items():
        for name, f in row["files"].items():
            lines.append(
                f"| {handle} | {name} | {f['bytes'] / 1e6:.1f} | {f['latency_ms']} | "
                f"{f['top1_agreement']:.0%} | {f['max_abs_diff']:.1e} |"
            )
    return "\n".join(lines)


def main() -> None:
    """Measure, print JSON, update the results file and docs/BENCHMARKS.md."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--home", type=Path)
    parser.add_argument("--handles", nargs="+", default=["efficientnet_lite0"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="export-bench-") as tmp:
        home = args.home or Path(tmp) / "home"
        result = {
            "machine": machine(),
            "backbones": {h: _measure(h, home, Path(tmp) / h) for h in args.handles},
        }
        result["photos"] = next(iter(result["backbones"].values()))["photos"]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n", "utf-8")
    emit("export_bench", result, _markdown(result))


if __name__ == "__main__":
    main()
