"""Load bench: 1,000 photos from 50 simulated users through the emulator, the real bot and one
worker, at the highest rate the stack sustains: every user sends its next photo as soon as the
previous one is answered, so 50 photos are always in flight and the stack sets the pace.

Reports throughput, p50/p95/p99 from update to reply, errors (must be 0) and the RSS of the worker
and the bot after warm-up and at the end. `--soak MINUTES` keeps the same load up for that long
and samples RSS every 30 s (not run in CI). Updates docs/BENCHMARKS.md.
Run: .venv/bin/python bench/load_bench.py [--photos 1000 --users 50] [--soak 10]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import emit, machine, percentiles
from harness.services import Service
from harness.stack import Stack
from harness.user import closed_loop, pet_photos

RSS_BOUND_MB = 100  # allowed growth of each service from warm-up to the end of the run
WARM_UP_PHOTOS = 50


def _user(stack: Stack, user: int, photos: list[bytes], until: float) -> list[dict]:
    """Send each photo after the previous answer (cycling until `until` when soaking)."""
    client = stack.client()
    try:
        return closed_loop(client, user, photos, until)
    finally:
        client.close()


def _load(stack: Stack, photos: list[bytes], users: int, seconds: float = 0) -> dict:
    until = time.monotonic() + seconds
    shares = [photos[u::users] for u in range(users)]
    started = time.perf_counter()
    with ThreadPoolExecutor(users) as pool:
        runs = pool.map(lambda u: _user(stack, 20_000 + u, shares[u], until), range(users))
        done = [x for run in runs for x in run]
    wall = time.perf_counter() - started
    return {
        "photos": len(done),
        "seconds": round(wall, 1),
        "throughput_photos_per_s": round(len(done) / wall, 2),
        "update_to_reply": percentiles([d["ms"] for d in done]),
        "errors": sum(d["error"] for d in done),
    }


def _rss(stack: Stack, worker: Service) -> dict[str, float]:
    assert stack.bot is not None
    return {"worker_mb": round(worker.rss_mb(), 1), "bot_mb": round(stack.bot.rss_mb(), 1)}


def _sample_rss(stack: Stack, worker: Service, stop: threading.Event) -> list[dict]:
    samples = []
    while not stop.wait(30):
        samples.append({"t_s": len(samples) * 30 + 30, **_rss(stack, worker)})
    return samples


def run(n_photos: int = 1000, users: int = 50, soak_minutes: float = 0) -> dict:
    """Start a stack, warm it up, run the load (and the soak), return the figures."""
    photos = pet_photos(n_photos)
    with (
        tempfile.TemporaryDirectory(prefix="load-bench-") as tmp,
        Stack(Path(tmp)).running() as stack,
    ):
        worker = stack.start_worker("load")
        stack.start_bot()
        _load(stack, photos[:WARM_UP_PHOTOS], 10)
        before = _rss(stack, worker)
        result = {"machine": machine(), "users": users, **_load(stack, photos, users)}
        after = _rss(stack, worker)
        if soak_minutes:
            stop = threading.Event()
            sampler = ThreadPoolExecutor(1).submit(_sample_rss, stack, worker, stop)
            result["soak"] = _load(stack, photos, users, soak_minutes * 60)
            stop.set()
            result["soak"]["rss_samples"] = sampler.result()
            result["soak"]["rss_end"] = _rss(stack, worker)
    growth = {k: round(after[k] - before[k], 1) for k in before}
    result |= {
        "rss_after_warm_up": before,
        "rss_end": after,
        "rss_growth_mb": growth,
        "rss_bound_mb": RSS_BOUND_MB,
    }
    if soak_minutes:
        end = result["soak"]["rss_end"]
        result["soak"]["rss_growth_mb"] = {k: round(end[k] - before[k], 1) for k in before}
    result["ok"] = result["errors"] == 0 and all(
        g <= RSS_BOUND_MB
        for g in [*growth.values(), *result.get("soak", {}).get("rss_growth_mb", {}).values()]
    )
    return result


def markdown(result: dict) -> str:
    """The docs/BENCHMARKS.md section for a load result."""
    p = result["update_to_reply"]
    title = "Soak" if "soak" in result else "Load"
    lines = [
        f"## {title}: photos from many users through the emulator, real bot and one worker\n",
        f"{result['photos']} photos from {result['users']} users, each sending its next photo "
        f"as soon as the previous one is answered (closed loop: the stack sets the rate); "
        f"{result['machine']}.\n",
        "| throughput | p50 ms | p95 ms | p99 ms | errors | worker RSS MB (warm → end) "
        "| bot RSS MB (warm → end) |",
        "|---|---|---|---|---|---|---|",
        f"| {result['throughput_photos_per_s']} photos/s | {p['p50_ms']} | {p['p95_ms']} "
        f"| {p['p99_ms']} | {result['errors']} | {result['rss_after_warm_up']['worker_mb']} → "
        f"{result['rss_end']['worker_mb']} | {result['rss_after_warm_up']['bot_mb']} → "
        f"{result['rss_end']['bot_mb']} |",
        f"\nBound: each service may grow at most {RSS_BOUND_MB} MB after warm-up.",
    ]
    if "soak" in result:
        soak = result["soak"]
        lines.append(
            f"\nSoak: {soak['seconds']:.0f} s at the same load, {soak['photos']} photos, "
            f"{soak['throughput_photos_per_s']} photos/s, {soak['errors']} errors; RSS growth "
            f"worker {soak['rss_growth_mb']['worker_mb']} MB, bot {soak['rss_growth_mb']['bot_mb']}"
            " MB (samples every 30 s in the JSON)."
        )
    return "\n".join(lines)


def main() -> None:
    """Run the load (and optional soak), print and record the figures; exit 1 if not ok."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--photos", type=int, default=1000)
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--soak", type=float, default=0, metavar="MINUTES")
    args = parser.parse_args()
    result = run(args.photos, args.users, args.soak)
    emit("load_bench" if not args.soak else "soak_bench", result, markdown(result))
    sys.exit(0 if result["ok"] else 1)


if __name__ == "__main__":
    main()
