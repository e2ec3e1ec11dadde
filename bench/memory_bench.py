"""Memory across a long run of `breedbot up`: retrains on a tiny set, then switches, with the RSS
of every process of the stack sampled each second.

The stack is the one users start (`python -m ops.cli up`: embedded Redis, worker, Flower, reply
sender, playground), driven through its queue as `breedbot retrain --via-queue` and `promote`
drive it. "Idle" figures are read after the stack has been quiet for IDLE_SECONDS. Prints JSON
and writes it to bench/results/memory_bench.json (with every sample) and the `memory` section
of docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
from celery import Celery

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import contract
from bench.common import DATASETS, emit, machine
from broker.config import client_config
from harness import REPO
from harness.waiting import wait_until
from ops.cli import zip_dataset
from ops.redis_server import free_port

IDLE_SECONDS = 15  # quiet before an idle reading: Celery's and Flower's periodic work settles
GOAL_MB = 500
RESULTS = REPO / "bench" / "results"


def _name(process: psutil.Process) -> str:
    """Which part of the stack a process is, from its command line."""
    line = " ".join(process.cmdline())
    for name in ("redis-server", "resource_tracker", "flower", "replier", "playground", "worker"):
        if name in line:
            return name
    return "up" if "ops.cli up" in line else "other"


def snapshot(root: int) -> dict[str, float]:
    """RSS in MB of each part of the stack under `root` (the `up` runner), summed per part."""
    parts: dict[str, float] = {}
    runner = psutil.Process(root)
    for process in [runner, *runner.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            name = _name(process)
            parts[name] = round(parts.get(name, 0.0) + process.memory_info().rss / 2**20, 1)
    parts["total"] = round(sum(parts.values()), 1)
    return parts


class Sampler(threading.Thread):
    """One snapshot a second, with the time and what the bench was doing."""

    def __init__(self, root: int) -> None:
        super().__init__(daemon=True)
        self.root, self.phase, self.samples = root, "start", []
        self.started, self.stopped = time.monotonic(), threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(1.0):
            with contextlib.suppress(psutil.Error):
                at = round(time.monotonic() - self.started, 1)
                self.samples.append({"t": at, "phase": self.phase, **snapshot(self.root)})


def _served(app: Celery, photo: bytes) -> int:
    request = contract.ClassifyRequest(image_b64=contract.encode_bytes(photo), top_k=1).to_dict()
    answer = app.send_task(contract.CLASSIFY, args=[request]).get(timeout=300)
    return contract.ClassifyResult.from_dict(answer).model_version


def _idle(sampler: Sampler, phase: str) -> dict[str, float]:
    sampler.phase = f"idle {phase}"
    time.sleep(IDLE_SECONDS)
    return snapshot(sampler.root)


def drive(app: Celery, sampler: Sampler, retrains: int, switches: int, steps: int) -> dict:
    """`retrains` retrains, then `switches` promotions back and forth; idle readings between."""
    photo = sorted((DATASETS / "pets-dev" / "pug").glob("*.jpg"))[0].read_bytes()
    wait_until(lambda: _served(app, photo) == 0, 600, "the worker to serve version 0")
    idle = {"start": _idle(sampler, "start")}
    zipped = contract.encode_bytes(zip_dataset(DATASETS / "csv-sample"))
    versions = []
    for i in range(retrains):
        sampler.phase = f"retrain {i + 1}"
        ref = contract.DatasetRef(zip_b64=zipped, name="csv-sample")
        request = contract.RetrainRequest(ref.to_dict(), {"how_many_training_steps": steps}, 0.0,
                                          force=True)  # fmt: skip
        result = app.send_task(contract.RETRAIN, args=[request.to_dict()]).get(timeout=1800)
        versions.append(contract.RetrainResult.from_dict(result).version)
        wait_until(lambda: _served(app, photo) == versions[-1], 120, "the new version served")
        if i == 0:
            idle["after_1_retrain"] = _idle(sampler, "after 1 retrain")
    idle[f"after_{retrains}_retrains"] = _idle(sampler, f"after {retrains} retrains")
    for i in range(switches):
        sampler.phase = f"switch {i + 1}"
        target = versions[-2] if i % 2 == 0 else versions[-1]
        app.send_task(contract.PROMOTE, args=[{"version": target}]).get(timeout=120)
        wait_until(lambda t=target: _served(app, photo) == t, 120, f"version {target} served")
    idle[f"after_{switches}_switches"] = _idle(sampler, f"after {switches} switches")
    return idle


def main() -> None:
    """Run the stack, drive it, print and save the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--retrains", type=int, default=10)
    parser.add_argument("--switches", type=int, default=20)
    parser.add_argument("--steps", type=int, default=30, help="training steps per retrain")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="memory-bench-") as tmp:
        env = {
            **os.environ,
            "VAR_DIR": f"{tmp}/var",
            "FLOWER_PORT": str(free_port()),
            "PLAYGROUND_PORT": str(free_port()),
            "TELEGRAM_BOT_TOKEN": "",
            # One backbone keeps each retrain short; the growth is in the serving worker.
            "RETRAIN_ARCHITECTURE": "efficientnet_lite0",
        }
        up = subprocess.Popen([sys.executable, "-m", "ops.cli", "up"], env=env, cwd=tmp,
                              stdout=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
        sampler = Sampler(up.pid)
        try:
            url_file = Path(tmp) / "var" / "redis" / "url"
            wait_until(url_file.is_file, 120, "the embedded Redis")
            url = url_file.read_text().strip()
            app = Celery("bench", set_as_current=False, config_source=client_config(url))
            app.conf.result_backend = url
            sampler.start()
            idle = drive(app, sampler, args.retrains, args.switches, args.steps)
        finally:
            sampler.stopped.set()
            os.killpg(up.pid, signal.SIGTERM)
            up.wait(120)
    last = idle[f"after_{args.switches}_switches"]["total"]
    result = {
        "machine": machine(),
        "retrains": args.retrains,
        "switches": args.switches,
        "goal_idle_mb": GOAL_MB,
        "met": last <= GOAL_MB,
        "idle_mb": idle,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "memory_bench.json").write_text(
        json.dumps({**result, "samples": sampler.samples}, indent=2)
    )
    rows = "\n".join(
        f"| {when.replace('_', ' ')} | {p['total']} | {p.get('worker', 0)} | {p.get('up', 0)} | "
        f"{p.get('resource_tracker', 0)} |"
        for when, p in idle.items()
    )
    emit(
        "memory",
        result,
        f"`python bench/memory_bench.py` (1 s samples in bench/results/memory_bench.json). Idle "
        f"RSS in MB of the whole `breedbot up` stack, goal ≤ {GOAL_MB}:\n\n"
        "| when | total | worker | up runner | resource_tracker |\n|---|---|---|---|---|\n" + rows,
    )


if __name__ == "__main__":
    main()
