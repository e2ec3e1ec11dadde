"""Bot bench: 200 photos from 20 simulated users through the emulator, the real bot and worker.

Reports p50/p95 from the user's update to the bot's reply, next to the worker-only figure of the
same run (the same photos sent straight to the classify task, timed to its stored result).
Run: .venv/bin/python bench/bot_bench.py [--photos 200 --users 20]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from celery import Celery

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import contract
from bench.common import DATASETS, REPO, emit, machine
from fakegram.api import FakeTelegram, PlaygroundClient, serve_in_thread
from fakegram.playground import PLAYGROUND_TOKEN, playground_env
from ops.processes import spawn, stop_group
from ops.redis_server import RedisServer


def _percentiles(values: list[float]) -> dict[str, float]:
    cuts = statistics.quantiles(values, n=100)
    return {"p50_ms": round(cuts[49], 1), "p95_ms": round(cuts[94], 1), "n": len(values)}


def _replies_to(message_id: int, events: list[dict]) -> list[dict]:
    def target(event: dict) -> int | None:
        return event["message"].get("reply_to_message", {}).get("message_id")

    return [e for e in events if e["type"] == "sent" and target(e) == message_id]


def _user(client: PlaygroundClient, user: int, photos: list[bytes]) -> list[float]:
    """One user sending photos one after another, each after the previous answer."""
    latencies, cursor = [], 0
    for photo in photos:
        asked = time.time()  # the emulator runs in this process: same clock as its events
        message_id = client.send(user, file=photo)["message"]["message_id"]
        events = client.wait_for(
            user, lambda ev, m=message_id: bool(_replies_to(m, ev)), after=cursor
        )
        latencies.append((_replies_to(message_id, events)[0]["at"] - asked) * 1000)
        cursor = events[-1]["seq"]
    return latencies


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
    files = sorted((DATASETS / "pets-dev").rglob("*.jpg"))[: args.photos]
    photos = [f.read_bytes() for f in files]
    with tempfile.TemporaryDirectory(prefix="bot-bench-") as tmp:
        fake = FakeTelegram(PLAYGROUND_TOKEN)
        with serve_in_thread(fake.app()) as url, RedisServer(Path(tmp) / "redis") as server:
            env = {
                **os.environ,
                **playground_env(url),
                "PYTHONPATH": str(REPO),
                "REDIS_URL": server.url,
                "VAR_DIR": str(Path(tmp) / "var"),
                "RATE_LIMIT_COUNT": "1000",
            }
            log = (Path(tmp) / "stack.log").open("ab")
            worker = spawn(
                [sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker",
                 "-Q", "infer,train,control", "--pool", "threads", "-c", "8", "-l", "warning"],
                cwd=tmp, env=env, stdout=log, stderr=log,
            )  # fmt: skip
            replier = spawn(
                [sys.executable, "-m", "ops.cli", "replier", "-l", "warning"],
                cwd=tmp, env=env, stdout=log, stderr=log,
            )  # fmt: skip
            bot = spawn([sys.executable, "-m", "bot.app"], cwd=tmp, env=env, stdout=log, stderr=log)
            client = PlaygroundClient(url)
            try:
                _user(client, 10_000, photos[:2])  # warm-up: model load, first connections
                started = time.perf_counter()
                shares = [photos[u :: args.users] for u in range(args.users)]
                with ThreadPoolExecutor(args.users) as pool:
                    runs = pool.map(lambda u: _user(client, 1 + u, shares[u]), range(args.users))
                    bot_latencies = [x for run in runs for x in run]
                wall = time.perf_counter() - started
                worker_latencies = _worker_only(server.url, photos[: args.photos // 2])
            finally:
                client.close()
                stop_group(bot, 10)
                stop_group(replier, 10)
                stop_group(worker, 30)
    result = {
        "machine": machine(),
        "photos": len(bot_latencies),
        "users": args.users,
        "update_to_reply": _percentiles(bot_latencies),
        "throughput_photos_per_s": round(len(bot_latencies) / wall, 2),
        "worker_only_classify_roundtrip": _percentiles(worker_latencies),
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
