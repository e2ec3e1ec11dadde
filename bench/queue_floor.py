"""Queue floor: what one classify job costs in Celery and Redis alone, next to #3's 0.8× goal.

When the model, the worker, Redis and the load generator share a machine's cores, throughput
through the queue is at most cores / (model CPU per photo + queue CPU per job). Measured in one
run, 32 jobs in flight, the same pets-dev photos as bench/service_bench.py:

- raw: Classifier.predict through LiteRT at batch 32 (decode included), photos/s and CPU ms;
- breedbot: the real worker and classify task, the photos' bytes with their magic bytes broken,
  so every job is answered `not_an_image` and no model runs;
- bare Celery (`bench/bare_celery.py`): a task that only decodes its base64, with #3's delivery
  settings (JSON, late acks, prefetch 1, results stored), without and with task events (`-E`).

For each, the CPU ms per job of the worker, the client and Redis, and the best rate the cores
allow once the model's own CPU is added, as a share of raw batch 32. Prints JSON and updates
the `queue_floor` section of docs/BENCHMARKS.md.

Run: `.venv/bin/python bench/queue_floor.py`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from contextlib import ExitStack
from functools import partial
from pathlib import Path

from celery import Celery
from celery.result import AsyncResult

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import bare_celery
from bench.common import emit, machine
from bench.service_bench import (
    WORKER_COMMAND,
    breedbot_app,
    busy_seconds,
    raw_rates,
    run_load,
    running_worker,
    send_classify,
    watched,
)
from harness.services import Service
from harness.user import pet_photos
from ops.redis_server import RedisServer

GOAL = 0.8  # #3: classify throughput under load vs the model's own batch-32 rate
CONCURRENCY = 32
BARE_COMMAND = ["-m", "bench.bare_celery"]


def unreadable(photos: list[bytes]) -> list[bytes]:
    """The same sizes with the magic bytes broken: the worker rejects them before decoding."""
    return [b"NOT AN IMAGE" + p[12:] for p in photos]


def one_round(
    app: Celery, worker: Service, server: RedisServer, jobs: list[bytes]
) -> dict[str, float]:
    """CPU ms per job of the worker, this client (and of that, sending) and Redis."""
    processes = watched(worker, server)
    sending: list[float] = []

    def send(app: Celery, photo: bytes) -> AsyncResult:
        started = time.thread_time()
        result = send_classify(app, photo)
        sending.append(time.thread_time() - started)
        return result

    before = busy_seconds(processes)
    latencies, _, results = run_load(app, jobs, CONCURRENCY, send=send)
    # breedbot must reject every job unread; bare Celery's answers carry no error at all.
    wrong = [r for r in results if r.get("error", "not_an_image") != "not_an_image"]
    if wrong:
        raise RuntimeError(f"unexpected answer: {wrong[0]}")
    cost = {
        k: (busy - before[k]) * 1e3 / len(latencies) for k, busy in busy_seconds(processes).items()
    }
    return cost | {"client_send": sum(sending) * 1e3 / len(latencies)}


def medians(samples: list[dict[str, float]]) -> dict[str, float]:
    """The median of each key over rounds."""
    return {k: round(statistics.median(s[k] for s in samples), 2) for k in samples[0]}


def bound(cost: dict[str, float], raw: dict) -> dict:
    """The best rate all cores allow with the model's CPU plus this queue cost per photo.

    Also with collecting results for free: only the worker, Redis and sending the jobs count.
    """
    total = cost["worker"] + cost["client"] + cost["redis"]
    floor = cost["worker"] + cost["client_send"] + cost["redis"]

    def share(queue_ms: float) -> float:
        best = (os.cpu_count() or 1) * 1e3 / (raw["batch_32_cpu_ms_per_image"] + queue_ms)
        return round(best / raw["batch_32_images_per_s"], 2)

    return {
        "cpu_ms_per_job": cost,
        "queue_ms_per_job": round(total, 2),
        "best_vs_raw_batch_32": share(total),
        "best_vs_raw_batch_32_collecting_free": share(floor),
    }


def main() -> None:
    """Measure raw and each queue's floor in one run, print and record them."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--photos", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    photos = pet_photos(args.photos)
    jobs = unreadable(photos) * 3
    with ExitStack() as stack:
        # All stacks up at once and their rounds interleaved, so each sees the same machine.
        stacks = {
            "breedbot worker": stack.enter_context(
                running_worker(WORKER_COMMAND, breedbot_app, {"INFERENCE_ENGINE": "litert"})
            ),
            **{
                f"bare Celery, {label}": stack.enter_context(
                    running_worker(
                        BARE_COMMAND,
                        partial(bare_celery.make_app, events=events),
                        {"BARE_EVENTS": str(int(events))},
                    )
                )
                for label, events in (("no events", False), ("task events on", True))
            },
        }
        run_load(stacks["breedbot worker"][0], photos[:40], 8)  # load and warm the model
        for app, _, _ in stacks.values():
            run_load(app, jobs[:40], CONCURRENCY)  # connections, pool threads
        raws, samples = [], {name: [] for name in stacks}
        for _ in range(args.rounds):
            raws.append(raw_rates(photos, None, "litert"))
            for name, running in stacks.items():
                samples[name].append(one_round(*running, jobs))
    raw = medians(raws)
    costs = {name: medians(rounds) for name, rounds in samples.items()}
    cores = os.cpu_count() or 1
    budget = cores * 1e3 / (GOAL * raw["batch_32_images_per_s"]) - raw["batch_32_cpu_ms_per_image"]
    result = {
        "bench": "queue_floor",
        "machine": machine(),
        "jobs_per_round": len(jobs),
        "rounds": args.rounds,
        "concurrency": CONCURRENCY,
        "raw_model": raw,
        "queue_budget_ms_per_job_at_goal": round(budget, 2),
        "queues": {name: bound(cost, raw) for name, cost in costs.items()},
    }
    emit("queue_floor", result, markdown(result))


def markdown(result: dict) -> str:
    """The docs/BENCHMARKS.md section."""
    raw = result["raw_model"]
    rows = "\n".join(
        f"| {name} | {c['worker']} / {c['client']} ({c['client_send']}) / {c['redis']} "
        f"| {q['queue_ms_per_job']} | {q['best_vs_raw_batch_32']}× "
        f"| {q['best_vs_raw_batch_32_collecting_free']}× |"
        for name, q in result["queues"].items()
        for c in [q["cpu_ms_per_job"]]
    )
    return (
        "## Queue floor (`bench/queue_floor.py`)\n\n"
        f"Machine: {result['machine']}. What one classify job costs the queue alone: "
        f"{result['jobs_per_round']} jobs a round, {result['concurrency']} in flight, medians of "
        f"{result['rounds']} rounds, the queues' rounds and raw interleaved. breedbot's jobs "
        "carry photo-sized bytes that fail the magic-byte check, so no "
        "model runs; the bare Celery app only decodes the base64. Raw LiteRT batch 32 in the same "
        f"run: **{raw['batch_32_images_per_s']} img/s**, {raw['batch_32_cpu_ms_per_image']} CPU "
        "ms per photo. Best = every core busy with the model's CPU plus the queue's, per photo; "
        "the last column counts only the worker, Redis and sending the jobs, as if collecting "
        "the results cost the client nothing.\n\n"
        f"A {GOAL}× goal leaves **{result['queue_budget_ms_per_job_at_goal']} CPU ms per job** "
        "for the worker's queue work, the client and Redis together.\n\n"
        "| queue | CPU ms per job: worker / client (sending) / Redis | total "
        "| best vs raw batch 32 | same, collecting for free |\n|---|---|---|---|---|\n" + rows
    )


if __name__ == "__main__":
    main()
