"""Many hosts: the bytes a version keeps in the blob store, and how fast every host switches.

Two worker "hosts" on one Redis, each with its own MODELS_DIR and BREEDBOT_HOME (the harness's
Stack), sharing only Redis and the blob store (a folder, or with --s3 a real S3 API: moto's
server). One retrain on the csv-sample makes version 1; then promotes alternate between 0 and 1,
and each host's time from the promote's answer to its log saying it serves the new version is
measured (the watcher polls Redis every RELOAD_INTERVAL). A cold switch is one to a version the
host has not cached: it fetches the bundle from the store first.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import contract
from bench.common import emit, machine
from harness.s3_server import S3Server
from harness.services import Service, served_version
from harness.stack import Stack
from harness.user import csv_sample_zip
from harness.waiting import wait_until
from store import blobs
from worker.celery_app import create_app
from worker.settings import WorkerSettings

RELOAD_INTERVAL = 1.0  # the default, as deployed


def _switch(app, workers: dict[str, Service], version: int) -> dict[str, float]:
    """Promote `version`; seconds from the answer until each host serves it."""
    payload = contract.PromoteRequest(version).to_dict()
    app.send_task(contract.PROMOTE, args=[payload]).get(timeout=120)
    answered = time.monotonic()
    seconds: dict[str, float] = {}

    def done() -> bool:
        for host, worker in workers.items():
            if host not in seconds and served_version(worker) == version:
                seconds[host] = round(time.monotonic() - answered, 3)
        return len(seconds) == len(workers)

    wait_until(done, 60, interval=0.01, what=f"both hosts to serve {version}")
    return seconds


def measure(home: Path, tmp: Path, rounds: int, s3: bool) -> dict:
    """Retrain once, then switch back and forth `rounds` times; sizes and times."""
    server = S3Server(tmp / "s3.log").start() if s3 else None
    env = {"RELOAD_INTERVAL": str(RELOAD_INTERVAL)}
    if server is not None:
        server.create_bucket("breedbot")
        env |= server.env("breedbot", "bench")
        os.environ.update(env)  # this process reads the bucket too (Stack.registry)
    stack = Stack(tmp, redis_password=None, loglevel="INFO", ready_seconds=900)
    try:
        with stack.running(**env):
            homes = {"a": home, "b": tmp / "b" / "home"}
            workers = {
                host: stack.start_worker(
                    host,
                    MODELS_DIR=str(tmp / host / "models"),
                    BREEDBOT_HOME=str(where),
                    BOTTLENECK_DIR=str(tmp / host / "bottlenecks"),
                    RETRAIN_ARCHITECTURE="efficientnet_lite0",
                )
                for host, where in homes.items()
            }
            app = create_app(WorkerSettings(redis_url=stack.redis_url(), var_dir=tmp / "client"))
            dataset = contract.DatasetRef(contract.encode_bytes(csv_sample_zip()), "csv-sample")
            request = contract.RetrainRequest(
                # Forced live: the bench times a switch, whatever the gate would say.
                dataset.to_dict(),
                {"how_many_training_steps": 100},
                min_accuracy=0.0,
                force=True,
            )
            started = time.monotonic()
            result = app.send_task(contract.RETRAIN, args=[request.to_dict()]).get(timeout=1800)
            retrain_s = round(time.monotonic() - started, 1)
            retrained = contract.RetrainResult.from_dict(result).version
            wait_until(lambda: all(served_version(w) == retrained for w in workers.values()), 60)
            reg = stack.registry()
            record = reg.record(retrained)
            sizes = {e.key: e.size for e in blobs.blob_hashes(reg.store)}
            bundle = {path: sizes[sha] for path, sha in record["bundle"].items()}
            metrics = json.loads(
                (tmp / "a" / "models" / str(retrained) / "metrics.json").read_text()
            )
            served = metrics["litert"]["served"]
            warm = [_switch(app, workers, v) for _ in range(rounds) for v in (0, retrained)]
            cold = []
            for _ in range(rounds):
                _switch(app, workers, 0)
                for host in workers:
                    shutil.rmtree(tmp / host / "models" / str(retrained))
                cold.append(_switch(app, workers, retrained))
            app.close()
    finally:
        if server is not None:
            server.stop()

    def summary(rows: list[dict[str, float]]) -> dict[str, float]:
        values = [s for row in rows for s in row.values()]
        return {
            "median_s": round(statistics.median(values), 3),
            "max_s": max(values),
            "n": len(values),
        }

    return {
        "machine": machine(),
        "store": "s3 (moto server)" if s3 else "local folder",
        "reload_interval_s": RELOAD_INTERVAL,
        "retrain_s": retrain_s,
        "served_precision": served,
        "bundle_bytes": sum(bundle.values()),
        "bundle_files": bundle,
        "switch_warm": summary(warm),
        "switch_cold": summary(cold),
    }


def main() -> int:
    """Run it, print JSON and update docs/BENCHMARKS.md."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--home", type=Path, help="BREEDBOT_HOME of host a (default: a temp one)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--s3", action="store_true", help="the store is moto's S3 server")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="switch-bench-") as tmp:
        home = args.home or Path(tmp) / "a-home"
        result = measure(home, Path(tmp), args.rounds, args.s3)
    files = "\n".join(
        f"| `{path}` | {size:,} |" for path, size in sorted(result["bundle_files"].items())
    )
    markdown = (
        f"## Many hosts: bytes per version and switch time (`bench/switch_bench.py`)\n\n"
        f"{result['machine']}; store: {result['store']}; two worker hosts, each its own "
        f"MODELS_DIR and BREEDBOT_HOME; watcher poll every {RELOAD_INTERVAL:g} s.\n\n"
        f"A version keeps **{result['bundle_bytes']:,} bytes** in the store (served "
        f"{result['served_precision']}); the float backbone and gate and the SavedModel come "
        f"from each host's BREEDBOT_HOME.\n\n| file | bytes |\n|---|---|\n{files}\n\n"
        f"From a promote's answer until a host serves the version: median "
        f"{result['switch_warm']['median_s']} s, max {result['switch_warm']['max_s']} s "
        f"(cached); median {result['switch_cold']['median_s']} s, max "
        f"{result['switch_cold']['max_s']} s when the host first fetches the bundle."
    )
    emit("switch_bench" + ("_s3" if args.s3 else ""), result, markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
