"""Bot bench: 200 photos from 20 simulated users through the emulator, the real bot and worker.

Reports p50/p95 from the user's update to the bot's reply, next to the worker-only figure of the
same run (the same photos sent straight to the classify task, timed to its stored result).
Run: .venv/bin/python bench/bot_bench.py [--photos 200 --users 20]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from celery import Celery

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import contract
from bench.common import emit, machine, percentiles
from fakegram.api import PlaygroundClient
from harness.stack import Stack
from harness.user import closed_loop, pet_photos


def _user(client: PlaygroundClient, user: int, photos: list[bytes]) -> list[float]:
    """One user sending photos one after another, each after the previous answer; ms each."""
    return [answer["ms"] for answer in closed_loop(client, user, photos)]


def _worker_only(redis_url: str, photos: list[bytes]) -> list[float]:
    client = Celery(broker=redis_url, backend=redis_url)
    client.conf.update(task_serializer="json", accept_content=["json"], result_serializer="json")
    latencies = []
    for photo in photos:
        payload = contract.ClassifyRequest(image_b64=contract.encode_bytes(photo)).to_dict()
        started = time.perf_counter()
        client.send_task(contract.CLASSIFY, args=[payload], queue=contract.QUEUE_INFER).get(60)
        latencies.append((time.perf_counter() - started) * 1000)
    client.close()
    return latencies


def main() -> None:
    """Start the stack, run both measurements, print and record the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--photos", type=int, default=200)
    parser.add_argument("--users", type=int, default=20)
    args = parser.parse_args()
    photos = pet_photos(args.photos)
    with (
        tempfile.TemporaryDirectory(prefix="bot-bench-") as tmp,
        Stack(Path(tmp), redis_password=None, loglevel="WARNING").running(
            RATE_LIMIT_COUNT="1000"
        ) as stack,
    ):
        stack.start_worker("bench")
        stack.start_bot()
        client = stack.client()
        try:
            _user(client, 10_000, photos[:2])  # warm-up: first connections, first batch shapes
            started = time.perf_counter()
            shares = [photos[u :: args.users] for u in range(args.users)]
            with ThreadPoolExecutor(args.users) as pool:
                runs = pool.map(lambda u: _user(client, 1 + u, shares[u]), range(args.users))
                bot_latencies = [x for run in runs for x in run]
            wall = time.perf_counter() - started
            worker_latencies = _worker_only(stack.redis_url(), photos[: args.photos // 2])
        finally:
            client.close()
    result = {
        "machine": machine(),
        "photos": len(bot_latencies),
        "users": args.users,
        "update_to_reply": percentiles(bot_latencies),
        "throughput_photos_per_s": round(len(bot_latencies) / wall, 2),
        "worker_only_classify_roundtrip": percentiles(worker_latencies),
    }
    bot_p = result["update_to_reply"]
    worker_p = result["worker_only_classify_roundtrip"]
    markdown = (
        "## Bot: update to reply through the emulator\n\n"
        f"{len(bot_latencies)} photos from {args.users} users (each waits for its answer), "
        f"real PTB bot, threads worker, embedded Redis; {machine()}.\n\n"
        "| path | p50 ms | p95 ms |\n|---|---|---|\n"
        f"| update → reply (bot, worker, reply task, chart) | {bot_p['p50_ms']} "
        f"| {bot_p['p95_ms']} |\n"
        f"| worker only (classify task round trip, sequential) | {worker_p['p50_ms']} "
        f"| {worker_p['p95_ms']} |"
    )
    emit("bot_bench", result, markdown)


if __name__ == "__main__":
    main()
