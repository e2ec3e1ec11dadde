"""Service bench: photos through the real queue at several client concurrencies.

For each inference engine (`--engines`, default litert and tf), starts an embedded redis-server
and one `breedbot worker` (threads pool, gather-loop batching) serving through it, then sends the
same photos with 1, 8 and 32 jobs in flight and reports p50/p95 latency (send to
result seen) and throughput, next to the raw model's batch-1 and batch-32 rates measured in this
run (Classifier.predict on the same bytes, decode included, while the worker idles), the worker's
RSS, and classify latency while a retrain runs on the same worker.

Run: `.venv/bin/python bench/service_bench.py`. Prints JSON and updates the `service_bench`
section of docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil
from celery import Celery
from celery.result import AsyncResult

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import contract
from bench.common import DATASETS, emit, machine
from harness.services import Service
from harness.stack import Stack
from harness.user import pet_photos
from ops.cli import zip_dataset
from ops.redis_server import RedisServer
from worker.celery_app import create_app
from worker.settings import WorkerSettings

POLL_SECONDS = 0.002
WORKER_COMMAND = ["-m", "ops.cli", "worker", "-l", "WARNING"]


def percentiles(latencies: list[float]) -> dict[str, float]:
    """p50/p95/mean of latencies in seconds, as milliseconds."""
    ms = sorted(x * 1e3 for x in latencies)
    return {
        "p50_ms": round(statistics.median(ms), 1),
        "p95_ms": round(ms[min(len(ms) - 1, int(0.95 * len(ms)))], 1),
        "mean_ms": round(statistics.fmean(ms), 1),
    }


def send_classify(app: Celery, photo: bytes) -> AsyncResult:
    """Queue one classify job for `photo`, by name as the bot does."""
    payload = contract.ClassifyRequest(image_b64=contract.encode_bytes(photo))
    return app.send_task(contract.CLASSIFY, args=[payload.to_dict()])


def run_load(
    app: Celery,
    photos: list[bytes],
    concurrency: int,
    keep_going: Callable[[], bool] = lambda: True,
    send: Callable[[Celery, bytes], AsyncResult] = send_classify,
) -> tuple[list[float], float, list[Any]]:
    """Keep `concurrency` jobs in flight; latencies (s), wall time (s) and the jobs' results.

    One thread polls all results with one MGET per cycle, so the client never races on
    Celery's result consumer and its own overhead stays flat as concurrency grows.
    """
    backend = app.backend
    pending: dict[str, float] = {}
    latencies: list[float] = []
    results: list[Any] = []
    queue = list(photos)
    started = time.perf_counter()
    while (queue and keep_going()) or pending:
        while queue and len(pending) < concurrency and keep_going():
            pending[send(app, queue.pop()).id] = time.perf_counter()
        ids = list(pending)
        metas = backend.client.mget([backend.get_key_for_task(i) for i in ids])
        now = time.perf_counter()
        for task_id, raw in zip(ids, metas, strict=True):
            if raw is None:
                continue
            meta = backend.decode_result(raw)
            if meta["status"] == "FAILURE":
                raise RuntimeError(f"job failed: {meta}")
            if meta["status"] == "SUCCESS":
                latencies.append(now - pending.pop(task_id))
                results.append(meta["result"])
        time.sleep(POLL_SECONDS)
    return latencies, time.perf_counter() - started, results


def timings_of(results: list[dict]) -> list[dict]:
    """The timings of classify results; raises if a photo came back as an error."""
    for result in results:
        if result.get("error"):
            raise RuntimeError(f"classify failed: {result}")
    return [result["timings_ms"] for result in results]


def watched(worker: Service, server: RedisServer) -> dict[str, psutil.Process]:
    """The processes whose CPU a run is charged: the worker, this client and Redis."""
    return {
        "worker": psutil.Process(worker.process.pid),
        "client": psutil.Process(),
        "redis": psutil.Process(server.process.pid),
    }


def busy_seconds(processes: dict[str, psutil.Process]) -> dict[str, float]:
    """User plus system CPU seconds each process has used so far."""
    return {name: sum(p.cpu_times()[:2]) for name, p in processes.items()}


def raw_rates(photos: list[bytes], home: Path | None, engine: str, reps: int = 3) -> dict:
    """Classifier.predict images/s at batch 1 and 32 (same bytes, decode included)."""
    from model.predict import load_classifier

    classifier = load_classifier(home=home, engine=engine)
    classifier.warm_up()
    rates = {}
    for batch in (1, 32):
        # The same 32 x reps photos either way.
        chunks = [photos[i : i + batch] for i in range(0, 32 * reps, batch)]
        classifier.predict(chunks[0])  # trace this batch shape once
        started, cpu_started = time.perf_counter(), time.process_time()
        for chunk in chunks:
            classifier.predict(chunk)
        n = sum(map(len, chunks))
        rates[f"batch_{batch}_images_per_s"] = round(n / (time.perf_counter() - started), 1)
        rates[f"batch_{batch}_cpu_ms_per_image"] = round(
            (time.process_time() - cpu_started) * 1e3 / n, 2
        )
    return rates


def during_retrain(app, photos: list[bytes], concurrency: int) -> dict:
    """Classify latency while a retrain (flowers-dev, 5 classes) runs on the same worker."""
    ref = contract.DatasetRef(
        zip_b64=contract.encode_bytes(zip_dataset(DATASETS / "flowers-dev")), name="flowers-dev"
    )
    params = {"how_many_training_steps": 400, "eval_step_interval": 20}
    # Forced live: a version the gate kept out would fail the job (#23), beside the point here.
    request = contract.RetrainRequest(ref.to_dict(), params, force=True)
    job = app.send_task(contract.RETRAIN, args=[request.to_dict()])
    while job.state not in (contract.PROGRESS_STATE, "SUCCESS", "FAILURE"):
        time.sleep(0.05)
    retrain_started = time.perf_counter()
    latencies, _, results = run_load(
        app, photos * 5, concurrency, keep_going=lambda: not job.ready()
    )
    timings_of(results)
    result = contract.RetrainResult.from_dict(job.get(timeout=1800))
    return {
        "concurrency": concurrency,
        "photos_answered": len(latencies),
        **percentiles(latencies),
        "retrain_seconds_observed": round(time.perf_counter() - retrain_started, 1),
        "retrain_test_accuracy": result.test_accuracy,
    }


def through_queue(app, photos: list[bytes], concurrency: int, raw: dict, processes) -> dict:
    """One load run at `concurrency` jobs in flight: latency, throughput and busy cores.

    `ceiling_vs_raw_batch_32` is what the cores would allow if the worker's own queue work cost
    nothing: every core busy with the raw model's CPU per photo plus the client's and Redis's.
    """
    before = busy_seconds(processes)
    latencies, wall, results = run_load(app, photos, concurrency)
    timings = timings_of(results)
    cpu = {k: round((busy - before[k]) / wall, 2) for k, busy in busy_seconds(processes).items()}
    rate = len(latencies) / wall
    raw_32 = raw["batch_32_images_per_s"]
    cpu_ms = {k: round(busy * 1e3 / rate, 2) for k, busy in cpu.items()}
    floor_ms = raw["batch_32_cpu_ms_per_image"] + cpu_ms["client"] + cpu_ms["redis"]
    return {
        "concurrency": concurrency,
        "photos": len(latencies),
        **percentiles(latencies),
        "images_per_s": round(rate, 1),
        "vs_raw_batch_32": round(rate / raw_32, 2),
        "mean_batch": round(statistics.fmean(t["batch_size"] for t in timings), 1),
        "in_task_p50_ms": round(statistics.median(t["total"] for t in timings), 1),
        # Forward pass + decode per image inside the worker, to compare with raw.
        "worker_predict_ms_per_image": round(
            statistics.fmean((t["model"] + t["decode"]) / t["batch_size"] for t in timings), 2
        ),
        "cores_busy": cpu,
        "cpu_ms_per_photo": cpu_ms,
        "ceiling_vs_raw_batch_32": round((os.cpu_count() or 1) * 1e3 / floor_ms / raw_32, 2),
    }


@contextmanager
def running_worker(
    command: list[str], make_app: Callable[[str], Celery], env: dict[str, str] | None = None
) -> Iterator[tuple[Celery, Service, RedisServer]]:
    """A fresh embedded Redis and one worker subprocess (`python COMMAND`) on it, until exit."""
    with (
        tempfile.TemporaryDirectory(prefix="service-bench-") as tmp,
        Stack(Path(tmp), redis_password=None).running(
            WORKER_CONCURRENCY=str(WorkerSettings().worker_concurrency), **(env or {})
        ) as stack,
    ):
        worker = stack.start_worker("bench", command=command)
        app = make_app(stack.redis_url())
        try:
            assert stack.redis_server is not None
            yield app, worker, stack.redis_server
        finally:
            app.close()


def breedbot_app(url: str) -> Celery:
    """The worker's own app, as a client of the Redis at `url`."""
    return create_app(WorkerSettings(redis_url=url))


def measure(
    engine: str, photos: list[bytes], concurrencies: list[int], home: Path | None, retrain: bool
) -> dict:
    """Redis and one worker serving through `engine`: raw rates, load runs, optional retrain."""
    env = {"INFERENCE_ENGINE": engine}
    with running_worker(WORKER_COMMAND, breedbot_app, env) as (app, worker, server):
        run_load(app, photos[:40], 8)  # warm-up: connections, batch shapes
        rates = raw_rates(photos, home, engine)
        processes = watched(worker, server)
        runs = [through_queue(app, photos, c, rates, processes) for c in concurrencies]
        during = during_retrain(app, photos, 4) if retrain else None
        memory = psutil.Process(worker.process.pid).memory_info()
        peak = _peak_rss_mb(worker.process.pid)
    return {
        "engine": engine,
        "raw_model": rates,
        "through_queue": runs,
        "classify_during_retrain": during,
        "worker_rss_mb": round(memory.rss / 2**20),
        "worker_peak_rss_mb": peak,
    }


def main() -> None:
    """Run every measurement for each engine, print and record the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--photos", type=int, default=200)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--engines", nargs="+", default=["litert", "tf"])
    args = parser.parse_args()
    photos = pet_photos(args.photos)
    home = Path(os.environ["BREEDBOT_HOME"]) if os.environ.get("BREEDBOT_HOME") else None
    # The retrain-beside-photos run only for the first engine: it takes a while.
    engines = [
        measure(engine, photos, args.concurrency, home, retrain=i == 0)
        for i, engine in enumerate(args.engines)
    ]
    settings = WorkerSettings()
    result = {
        "bench": "service",
        "machine": machine(),
        "pool": f"threads x {settings.worker_concurrency}, gather-loop batching "
        f"(max {settings.batch_max_size}, wait {settings.batch_wait_ms} ms)",
        "engines": engines,
    }
    emit("service_bench", result, markdown(result))


def _peak_rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024)
    except OSError:
        pass
    return None


def _cpu_split(run: dict) -> str:
    cpu = run["cpu_ms_per_photo"]
    return f"{cpu['worker']} / {cpu['client']} / {cpu['redis']}"


def markdown(result: dict) -> str:
    """The docs/BENCHMARKS.md section."""
    first = result["engines"][0]
    parts = [
        "## Service (`bench/service_bench.py`)\n\n"
        f"Machine: {result['machine']}. One worker per engine, {result['pool']}, embedded Redis, "
        f"the zero-shot model. {first['through_queue'][0]['photos']} pets-dev photos per run, "
        "JSON + base64 through Redis; latency is send → result seen by the client. Raw = "
        "Classifier.predict through the same engine in the same run, decode included. Ceiling = "
        "the rate every core could give if the worker's queue work cost nothing (raw model CPU "
        "+ client + Redis per photo), as a share of raw batch 32; the Queue floor section "
        "(`bench/queue_floor.py`) adds what the worker's queue work costs."
    ]
    for e in result["engines"]:
        raw = e["raw_model"]
        rows = "\n".join(
            f"| {r['concurrency']} | {r['p50_ms']} | {r['p95_ms']} | {r['images_per_s']} "
            f"| {r['vs_raw_batch_32']}× | {r['mean_batch']} | {_cpu_split(r)} "
            f"| {r['ceiling_vs_raw_batch_32']}× |"
            for r in e["through_queue"]
        )
        parts.append(
            f"**Engine `{e['engine']}`**: raw batch 1 **{raw['batch_1_images_per_s']} img/s**, "
            f"batch 32 **{raw['batch_32_images_per_s']} img/s** "
            f"({raw['batch_32_cpu_ms_per_image']} CPU ms per photo); worker RSS "
            f"{e['worker_rss_mb']} MB (peak {e['worker_peak_rss_mb']} MB).\n\n"
            "| in flight | p50 ms | p95 ms | img/s | vs raw batch 32 | mean batch "
            "| CPU ms per photo: worker / client / Redis | ceiling vs raw 32 |\n"
            "|---|---|---|---|---|---|---|---|\n" + rows
        )
    during = first["classify_during_retrain"]
    parts.append(
        f"Classify while a retrain (flowers-dev, 400 steps) runs on the same worker "
        f"(`{first['engine']}`), {during['concurrency']} in flight: p50 **{during['p50_ms']} "
        f"ms**, p95 **{during['p95_ms']} ms** ({during['photos_answered']} photos during "
        f"{during['retrain_seconds_observed']} s of retrain)."
    )
    return "\n\n".join(parts)


if __name__ == "__main__":
    main()
