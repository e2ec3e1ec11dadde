"""Bot bench: photos from 1, 20 and 50 simulated users through the emulator, the real bot,
reply sender and worker.

Reports p50/p95 from the user's update to the bot's reply and photos/s for each number of users,
the CPU each process spent per photo (bot, reply sender, worker, Redis, the emulator's thread)
beside the model's own (decode and forward pass, measured here first), the Redis commands per
photo by name (INFO commandstats: round trips, or parts of pipelines), and the worker-only
figure of the same run (the same photos sent straight to the classify task). Telegram's send
limits are lifted, as the per-user flood guard is: the bench measures what the stack can carry
(with them, a chat gets about 1 reply a second and the bot 30).
Run: .venv/bin/python bench/bot_bench.py [--photos 200 --single 40 --users 20 50]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
from celery import Celery
from redis import Redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import contract
from bench.common import emit, machine, percentiles
from fakegram.api import PlaygroundClient
from harness.stack import Stack
from harness.user import closed_loop, pet_photos


def _user(client: PlaygroundClient, user: int, photos: list[bytes]) -> list[float]:
    """One user sending photos one after another, each after the previous answer; ms each."""
    return [answer["ms"] for answer in closed_loop(client, user, photos)]


def _model_cpu_ms(photos: list[bytes], batch: int = 8) -> float:
    """CPU ms per photo of the zero-shot model itself (decode + forward pass, LiteRT)."""
    from model.predict import load_classifier

    classifier = load_classifier(engine="litert")
    classifier.predict(photos[:batch])  # warm
    started = time.process_time()
    for i in range(0, len(photos), batch):
        classifier.predict(photos[i : i + batch])
    return round((time.process_time() - started) * 1000 / len(photos), 2)


def _cpu_seconds(processes: dict[str, int]) -> dict[str, float]:
    """CPU seconds so far of each process (with its children) and of the emulator's thread."""
    seconds = {}
    for name, pid in processes.items():
        process = psutil.Process(pid)
        seconds[name] = sum(
            sum(p.cpu_times()[:2]) for p in [process, *process.children(recursive=True)]
        )
    emulator = next(t.native_id for t in threading.enumerate() if t.name == "fake-telegram")
    seconds["emulator"] = next(
        t.user_time + t.system_time for t in psutil.Process().threads() if t.id == emulator
    )
    return seconds


def _redis_calls(redis: Redis) -> Counter[str]:
    """Commands Redis has run so far, by name (each one a round trip, or part of a pipeline's)."""
    stats = redis.info("commandstats")
    return Counter({name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()})


def _phase(
    client: PlaygroundClient,
    photos: list[bytes],
    users: int,
    processes: dict[str, int],
    redis: Redis,
) -> dict:
    """Every user sends its share one photo at a time; latency, rate, CPU and Redis calls, per
    photo."""
    calls = _redis_calls(redis)
    before = _cpu_seconds(processes)
    bench_before = sum(psutil.Process().cpu_times()[:2])
    started = time.perf_counter()
    shares = [photos[u::users] for u in range(users)]
    first = users * 1000  # fresh chats for each phase
    with ThreadPoolExecutor(users) as pool:
        runs = pool.map(lambda u: _user(client, first + u, shares[u]), range(users))
        latencies = [x for run in runs for x in run]
    wall = time.perf_counter() - started
    after = _cpu_seconds(processes)
    bench_cpu = sum(psutil.Process().cpu_times()[:2]) - bench_before
    cpu = {k: round((after[k] - before[k]) * 1000 / len(latencies), 2) for k in after}
    # INFO itself and the harness's own calls are a few in a whole phase: noise below 0.05.
    calls = _redis_calls(redis) - calls
    per_photo = {k: round(n / len(latencies), 2) for k, n in calls.most_common() if n >= 5}
    return {
        "users": users,
        "update_to_reply": percentiles(latencies),
        "throughput_photos_per_s": round(len(latencies) / wall, 2),
        "cpu_ms_per_photo": {**cpu, "total": round(sum(cpu.values()), 2)},
        # Not in the total: this process's other threads, the simulated users' HTTP clients
        # (Telegram's apps, in real life), which take their share of the same two cores.
        "users_cpu_ms_per_photo": round(
            (bench_cpu - (after["emulator"] - before["emulator"])) * 1000 / len(latencies), 2
        ),
        "redis_calls_per_photo": {**per_photo, "total": round(calls.total() / len(latencies), 2)},
    }


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
    parser.add_argument("--photos", type=int, default=200, help="per multi-user phase")
    parser.add_argument("--single", type=int, default=40, help="photos of the one-user phase")
    parser.add_argument("--users", type=int, nargs="+", default=[20, 50])
    args = parser.parse_args()
    photos = pet_photos(args.photos)
    # Figures move with what else runs on the machine: the 1-minute load average, before and after.
    load_before = round(os.getloadavg()[0], 2)
    model_ms = _model_cpu_ms(photos[:64])
    with (
        tempfile.TemporaryDirectory(prefix="bot-bench-") as tmp,
        # The stack lifts the flood guard and Telegram's send limits (harness/stack.py).
        Stack(Path(tmp), redis_password=None, loglevel="WARNING").running() as stack,
    ):
        worker = stack.start_worker("bench", WORKER_CONCURRENCY="8")
        bot = stack.start_bot()
        assert stack.redis_server is not None and stack.replier is not None
        processes = {"bot": bot.process.pid, "replier": stack.replier.process.pid}
        processes |= {"worker": worker.process.pid, "redis": stack.redis_server.process.pid}
        client, redis = stack.client(), stack.redis()
        try:
            _user(client, 10_000, photos[:4])  # warm-up: model load, first connections
            phases = [_phase(client, photos[: args.single], 1, processes, redis)]
            phases += [_phase(client, photos, users, processes, redis) for users in args.users]
            worker_latencies = _worker_only(stack.redis_url(), photos[: args.single])
        finally:
            client.close()
            redis.close()
    result = {
        "machine": machine(),
        "load_average": {"before": load_before, "after": round(os.getloadavg()[0], 2)},
        "model_cpu_ms_per_photo": model_ms,
        "phases": phases,
        "worker_only_classify_roundtrip": percentiles(worker_latencies),
    }
    emit("bot_bench", result, _markdown(result))


def _markdown(result: dict) -> str:
    names = ["bot", "replier", "worker", "redis", "emulator", "total"]
    rows = []
    for phase in result["phases"]:
        p, cpu = phase["update_to_reply"], phase["cpu_ms_per_photo"]
        rows.append(
            f"| {phase['users']} | {p['n']} | {phase['throughput_photos_per_s']} | {p['p50_ms']} "
            f"| {p['p95_ms']} | " + " | ".join(str(cpu[n]) for n in names) + " |"
        )
    calls = "; ".join(
        f"{phase['users']} user(s): {phase['redis_calls_per_photo']['total']}"
        for phase in result["phases"]
    )
    users_cpu = "; ".join(
        f"{phase['users']} user(s): {phase['users_cpu_ms_per_photo']}" for phase in result["phases"]
    )
    worker_p = result["worker_only_classify_roundtrip"]
    load = result["load_average"]
    return (
        "## Bot: update to reply through the emulator\n\n"
        "Each user sends its next photo when the previous one is answered; real PTB bot, reply "
        "sender, threads worker (8), embedded Redis, emulator in the bench process; Telegram's "
        f"send limits lifted; {result['machine']}, load average {load['before']} before and "
        f"{load['after']} after. CPU is per photo, in ms, per process.\n\n"
        "| users | photos | photos/s | p50 ms | p95 ms | bot | reply sender | worker | Redis "
        "| emulator | all |\n|---|---|---|---|---|---|---|---|---|---|---|\n"
        + "\n".join(rows)
        + f"\n\nThe model itself (JPEG decode and LiteRT forward pass, batches of 8): "
        f"{result['model_cpu_ms_per_photo']} ms of CPU per photo. Worker only (classify task "
        f"round trip, sequential): p50 {worker_p['p50_ms']} ms, p95 {worker_p['p95_ms']} ms. "
        f"Redis commands per photo, all processes ({calls}); by command in the JSON. The "
        f"simulated users' HTTP clients, in the bench process and on the same cores, not in "
        f"the table: {users_cpu} ms of CPU per photo."
    )


if __name__ == "__main__":
    main()
