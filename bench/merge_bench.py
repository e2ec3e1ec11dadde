"""What a merged retrain (`/retrain merge`) costs against uploading everything again.

Run: `.venv/bin/python bench/merge_bench.py` (small by default). A base retrain on zip A keeps
its photos and fills the bottleneck cache; then, each from a copy of that state, zip A+B in
full and zip B merged into A's kept photos, with the cache warm (the same host) and cold
(another host, whose cache never saw A). In-process, the worker's own steps: keep and merge
(worker/datasets.prepare, on a local store) and retrain(); the gate and publishing are alike for
both and left out. Prints JSON and updates the `merge_bench` section of docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import contract
from bench.common import emit, machine, peak_rss_mb
from harness.user import breeds_zip
from model import backbones, train
from model.hparams import HParams
from store.blobs import LocalStore, blob_hashes
from worker import datasets
from worker.settings import WorkerSettings

BASE = ("Abyssinian", "Bengal", "american_bulldog")  # 45 photos each in pets-dev
ADDED = ("Sphynx",)  # 25


def _stored_bytes(store: LocalStore) -> int:
    return sum(entry.size for entry in blob_hashes(store))


def retrain(
    zip_bytes: bytes, merge: bool, state: Path, hp: HParams, home: Path, base: dict | None
) -> dict[str, Any]:
    """Keep (and merge) the upload in `state`'s store, then retrain with `state`'s cache."""
    settings = WorkerSettings(_env_file=None, var_dir=state, breedbot_home=home)
    store = LocalStore(state / "store")
    ref = contract.DatasetRef(contract.encode_bytes(zip_bytes), "pets.zip", merge_last=merge)
    state.mkdir(parents=True, exist_ok=True)
    before = _stored_bytes(store)
    started, cpu = time.perf_counter(), time.process_time()
    with tempfile.TemporaryDirectory(dir=state) as tmp:
        # `base`, the record of the retrain on A, stands for the active version's.
        prepared = datasets.prepare(ref, Path(tmp), settings, store, hp.min_images_per_class, base)
        prepare_s = time.perf_counter() - started
        result = train.retrain(
            prepared.folder, Path(tmp) / "out", hp, home=home, bottleneck_dir=state / "cache"
        )
    return {
        "upload_bytes": len(zip_bytes),
        "store_bytes_added": _stored_bytes(store) - before,
        "photos": prepared.record["photos"],
        "sources": prepared.record["sources"],
        "seconds": round(time.perf_counter() - started, 2),
        "cpu_s": round(time.process_time() - cpu, 2),
        "prepare_s": round(prepare_s, 2),
        "extraction_s": result.metrics["extraction_seconds"],
        "training_s": result.metrics["training_seconds"],
        "saving_s": result.metrics["saving_seconds"],
        "computed": result.bottlenecks_computed,
        "cached": result.bottlenecks_cached,
        "cv_accuracy": result.metrics["cross_validation"]["accuracy"],
        "record": prepared.record,
    }


def markdown(result: dict) -> str:
    """The table written into docs/BENCHMARKS.md."""
    rows = [
        "## Merged retrain against a full one (`bench/merge_bench.py`)",
        "",
        f"Machine: {result['machine']}, load average {result['load_average_before']} before, "
        f"{result['load_average_after']} after. Backbone {result['backbone']}, "
        f"{result['steps']} steps, no flips; A = {result['per_class']} pets-dev photos of each "
        f"of {', '.join(BASE)}; B = as many of {', '.join(ADDED)}. Each row starts from the "
        "state the base retrain on A left (its photos kept, its vectors cached); warm = that "
        "host's bottleneck cache, cold = another host's empty one. Prepare = unpack, check, "
        "hash and keep the upload, merge the manifests, write the training folder; saving = "
        "the SavedModel and the LiteRT files. One run each, in-process, after an unrecorded "
        "warm-up retrain with the same classes.",
        "",
        "| run | upload bytes | store bytes added | photos (kept + upload) | vectors computed / "
        "cached | prepare s | extraction s | training s | saving s | total s (CPU s) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in result["runs"].items():
        rows.append(
            f"| {name} | {r['upload_bytes']} | {r['store_bytes_added']} "
            f"| {r['photos']} ({r['sources']['kept']} + {r['sources']['upload']}) "
            f"| {r['computed']} / {r['cached']} | {r['prepare_s']} | {r['extraction_s']} "
            f"| {r['training_s']} | {r['saving_s']} | {r['seconds']} ({r['cpu_s']}) |"
        )
    return "\n".join(rows)


def main() -> None:
    """Run the benchmark and record it."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--home", type=Path, help="BREEDBOT_HOME with the backbone exports")
    parser.add_argument("--per-class", type=int, default=25)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--backbone", default="efficientnet_lite0")
    args = parser.parse_args()
    load_before = [round(x, 2) for x in os.getloadavg()]
    home = args.home or backbones.default_home()
    hp = HParams(
        tfhub_module=args.backbone, how_many_training_steps=args.steps, flip_left_right=False
    )

    def photos(breeds: tuple[str, ...]) -> bytes:
        return breeds_zip(dict.fromkeys(breeds, args.per_class))

    zip_a, zip_b, zip_all = photos(BASE), photos(ADDED), photos(BASE + ADDED)
    runs: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="merge-bench-") as tmp_name:
        after_a = Path(tmp_name) / "after-a"
        runs["base: A"] = retrain(zip_a, False, after_a, hp, home, None)
        base = {"version": 1, "dataset": runs["base: A"].pop("record")}

        def state(name: str, warm: bool) -> Path:
            copy = Path(tmp_name) / name
            shutil.copytree(after_a / "store", copy / "store")
            if warm:
                shutil.copytree(after_a / "cache", copy / "cache")
            return copy

        # Unrecorded: the first retrain with one more class also builds what saving reuses.
        retrain(zip_b, True, state("warm-up", True), hp, home, base)
        for name, zip_bytes, merge, warm in (
            ("full A+B, warm", zip_all, False, True),
            ("merge B, warm", zip_b, True, True),
            ("full A+B, cold", zip_all, False, False),
            ("merge B, cold", zip_b, True, False),
        ):
            runs[name] = retrain(zip_bytes, merge, state(name, warm), hp, home, base)
            runs[name].pop("record")
    result = {
        "bench": "merge",
        "machine": machine(),
        "load_average_before": load_before,
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "backbone": args.backbone,
        "steps": args.steps,
        "per_class": args.per_class,
        "runs": runs,
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }
    emit("merge_bench", result, markdown(result))


if __name__ == "__main__":
    main()
