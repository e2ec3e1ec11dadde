"""Head-of-line: what costly images in flight add to another user's answer.

A real stack (Redis, one `breedbot worker` as the harness starts it); each round sends 4 costly
files through the queue, then times one normal photo through `breedbot classify` (a subprocess,
as a user runs it) while they are in flight, and the same photo with nothing else in flight.
Two sets: the issue's files (49 MP, under the pixel limit: a 16-bit grey PNG and an RGBA PNG)
and the costliest files the decode budget still accepts. Also each file's decode in this
process, against a normal photo's. Run: `.venv/bin/python bench/costly_image_bench.py`; prints
JSON, writes bench/results/costly_image_bench.json and the `head-of-line` section of
docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


import contract
from bench.common import REPO, emit, machine
from harness.faults import budget_images, costly_images
from harness.stack import Stack
from harness.user import pet_photos
from model.runtime import images as imagelib
from model.runtime.home import default_home
from worker.celery_app import create_app
from worker.settings import WorkerSettings

IN_FLIGHT = 4
GOAL_ADDED_S = 1.5
RESULTS = REPO / "bench" / "results"


def _cli_seconds(stack: Stack, photo: Path) -> float:
    """Wall time of `breedbot classify PHOTO` against the stack."""
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "ops.cli", "classify", str(photo)],
        env=stack.env,
        cwd=REPO,
        check=True,
        capture_output=True,
        timeout=300,
    )
    return time.perf_counter() - started


def _round(app, stack: Stack, photo: Path, files: list[bytes]) -> float:
    """One classify through the CLI with `files` in flight (sent first)."""
    pending = [
        app.send_task(
            contract.CLASSIFY,
            args=[contract.ClassifyRequest(contract.encode_bytes(data), top_k=1).to_dict()],
        )
        for data in files
    ]
    time.sleep(0.3)  # the costly files reach the worker first
    seconds = _cli_seconds(stack, photo)
    for result in pending:
        result.get(timeout=600)
    return seconds


def _decode_ms(data: bytes) -> float:
    """Best of 3 in-process decodes (a refusal counts: it is what the file costs)."""
    times = []
    for _ in range(3):
        started = time.perf_counter()
        with contextlib.suppress(imagelib.ImageError):
            imagelib.decode_image(data)
        times.append((time.perf_counter() - started) * 1e3)
    return round(min(times), 1)


def _telegram_photo(photo: bytes) -> bytes:
    """A pets-dev photo at the 1280 px Telegram sends photos at, as a JPEG."""
    out = io.BytesIO()
    Image.open(io.BytesIO(photo)).convert("RGB").resize((1280, 960)).save(out, "JPEG", quality=87)
    return out.getvalue()


def measure(root: Path, rounds: int) -> dict:
    """Idle and loaded CLI answers for each costly set; decode times; the worker's RSS."""
    photo = root / "photo.jpg"
    photo.write_bytes(pet_photos(1)[0])
    issue = costly_images()
    budget = budget_images(getattr(imagelib, "MAX_DECODE_BYTES", 48 * 2**20))
    sets = {
        "issue: 16-bit grey PNG x4": [issue["16-bit grey PNG"]] * IN_FLIGHT,
        "issue: RGBA PNG x4": [issue["RGBA PNG"]] * IN_FLIGHT,
        "at the budget: RGBA PNG x4": [budget["RGBA PNG at the budget"]] * IN_FLIGHT,
    }
    load_before = os.getloadavg()[0]  # other work on the machine moves these figures
    stack = Stack(root / "stack", redis_password=None, loglevel="WARNING")
    with stack.running(BREEDBOT_HOME=str(default_home())):
        worker = stack.start_worker("w")
        app = create_app(WorkerSettings(redis_url=stack.redis_url(), var_dir=root / "client"))
        _cli_seconds(stack, photo)  # warm: first answer
        idle = [_cli_seconds(stack, photo) for _ in range(rounds)]
        loaded = {
            name: [_round(app, stack, photo, files) for _ in range(rounds)]
            for name, files in sets.items()
        }
        rss = worker.rss_mb()
        alive = worker.alive()
    base = statistics.median(idle)
    added = {name: round(statistics.median(s) - base, 2) for name, s in loaded.items()}
    normal = _decode_ms(photo.read_bytes())
    telegram = _decode_ms(_telegram_photo(photo.read_bytes()))
    files = {**issue, **budget}
    return {
        "machine": machine(),
        "rounds": rounds,
        "in_flight": IN_FLIGHT,
        "cli_idle_median_s": round(base, 2),
        "cli_loaded_median_s": {n: round(statistics.median(s), 2) for n, s in loaded.items()},
        "added_s": added,
        "goal_added_s": GOAL_ADDED_S,
        "ok": all(a <= GOAL_ADDED_S for a in added.values()) and alive,
        "decode_ms": {"pets-dev photo": normal, "1280 px photo (Telegram's size)": telegram}
        | {n: _decode_ms(d) for n, d in files.items()},
        "file_kb": {n: round(len(d) / 1024, 1) for n, d in files.items()},
        "worker_rss_mb_after": round(rss, 1),
        "worker_alive": alive,
        "load_average_1min": [round(load_before, 1), round(os.getloadavg()[0], 1)],
    }


def record(result: dict) -> None:
    """Keep `result` in bench/results and write the section (before and after, when both ran)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"costly_image_bench_{result['label']}.json").write_text(
        json.dumps(result, indent=2) + "\n"
    )
    lines = []
    for label in ("before", "after"):
        path = RESULTS / f"costly_image_bench_{label}.json"
        if path.exists():
            run = json.loads(path.read_text())
            added = ", ".join(f"{n}: +{a} s" for n, a in run["added_s"].items())
            lines.append(
                f"- {label} ({run['rounds']} rounds): {added}; worker RSS after "
                f"{run['worker_rss_mb_after']} MB; machine load {run.get('load_average_1min')}"
            )
    emit(
        "head-of-line",
        result,
        "## Head-of-line: costly images in flight (bench/costly_image_bench.py)\n\n"
        f"What {IN_FLIGHT} costly files in flight add to another user's `breedbot classify` "
        f"(median; goal ≤ {GOAL_ADDED_S} s). Before: the issue's 49 MP files were decoded in "
        "the batch everyone waited on; after: refused from the header, and the costliest "
        "accepted files decode on their own job's thread, one heavy decode at a time.\n\n"
        + "\n".join(lines),
    )


def main() -> None:
    """Run the bench, print and record it."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--label", default="after", help="before/after, kept in the JSON")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="costly-") as tmp:
        record({"label": args.label, **measure(Path(tmp), args.rounds)})


if __name__ == "__main__":
    main()
