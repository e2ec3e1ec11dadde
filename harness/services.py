"""One service subprocess of a test or bench stack, and the one rule for when it is ready.

Each kind of service has one ready condition, checked the same way everywhere (as Celery's own
`celery.contrib.testing.worker.start_worker` does with `ensure_started`):

- worker, replier: the Celery node answers a ping (it loads and warms its model before it
  consumes, so a worker that answers is serving);
- bot: PTB logged "Application started" (it is polling);
- flower: its /healthcheck answers 200.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
from celery import Celery

import contract
from broker.config import client_config
from harness import DATASETS, REPO
from harness.waiting import wait_until
from ops.processes import spawn, stop_group

PYTHON = sys.executable
READY_SECONDS = 240  # a cold worker exports the backbone once per BREEDBOT_HOME


@dataclass
class Service:
    """One service subprocess (its own process group), its environment and its log file."""

    name: str
    kind: str | None  # a key of READY, or None for a process nobody waits for
    process: subprocess.Popen[bytes]
    log: Path
    env: dict[str, str]
    url: str = ""  # where it serves HTTP (Flower)

    @property
    def hostname(self) -> str:
        """The Celery node name of a worker started as `-n name@%h`."""
        return f"{self.name}@{socket.gethostname()}"

    def log_text(self) -> str:
        """Everything the process wrote so far."""
        return self.log.read_text(errors="replace")

    def alive(self) -> bool:
        """True while the process runs."""
        return self.process.poll() is None

    def rss_mb(self) -> float:
        """Resident memory of the process and its children, in MB."""
        leader = psutil.Process(self.process.pid)
        return sum(p.memory_info().rss for p in [leader, *leader.children(recursive=True)]) / 2**20

    def kill(self) -> None:
        """SIGKILL the whole group: no clean shutdown, as in a crash."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self, timeout: float = 10) -> bool:
        """SIGTERM the group, SIGKILL after `timeout`; True if it stopped cleanly."""
        return stop_group(self.process, timeout)


def served_version(worker: Service) -> int | None:
    """The model version a worker last said it serves (its log), None before the first."""
    found = re.findall(r"serving model version (\d+) through", worker.log_text())
    return int(found[-1]) if found else None


def answered_versions(app: Celery, n: int) -> list[int]:
    """The model version of each of `n` classify jobs on one pets-dev photo, sent at once (any
    worker answers)."""
    photo = sorted((DATASETS / "pets-dev" / "pug").glob("*.jpg"))[0].read_bytes()
    request = contract.ClassifyRequest(image_b64=contract.encode_bytes(photo), top_k=1)
    sent = [app.send_task(contract.CLASSIFY, args=[request.to_dict()]) for _ in range(n)]
    return [contract.ClassifyResult.from_dict(r.get(timeout=60)).model_version for r in sent]


def job_processes(pid: int) -> list[psutil.Process]:
    """The processes a worker spawned for its jobs (worker/child.py) that run now."""
    found = []
    with contextlib.suppress(psutil.Error):
        for process in psutil.Process(pid).children(recursive=True):
            with contextlib.suppress(psutil.Error):
                if "spawn_main" in " ".join(process.cmdline()):
                    found.append(process)
    return found


def _celery_answers(service: Service) -> bool:
    pinger = Celery(set_as_current=False)
    pinger.conf.update(client_config(service.env["REDIS_URL"]))
    try:
        return bool(pinger.control.ping(destination=[service.hostname], timeout=0.5))
    finally:
        pinger.close()


def _polling(service: Service) -> bool:
    return "Application started" in service.log_text()


def _http_ok(service: Service) -> bool:
    try:
        return httpx.get(f"{service.url}/healthcheck", timeout=5).status_code == 200
    except httpx.TransportError:
        return False


READY: dict[str, Callable[[Service], bool]] = {
    "worker": _celery_answers,
    "replier": _celery_answers,
    "bot": _polling,
    "flower": _http_ok,
}


def wait_ready(service: Service, timeout: float = READY_SECONDS) -> Service:
    """Block until the service meets its kind's ready condition; raise if it exits first."""
    if service.kind is None:
        return service
    ready = READY[service.kind]
    # A short interval: benches read time-to-ready off this wait.
    settled = wait_until(lambda: not service.alive() or ready(service), timeout, interval=0.05)
    if not service.alive() or not settled:
        state = f"not ready in {timeout} s" if service.alive() else "exited"
        raise RuntimeError(f"{service.name} {state}:\n{service.log_text()[-3000:]}")
    return service


def start_service(
    name: str,
    argv: list[str],
    env: dict[str, str],
    log: Path,
    kind: str | None = None,
    url: str = "",
    timeout: float = READY_SECONDS,
) -> Service:
    """Start `python ARGV` logging to `log`, and wait until it is ready (see READY)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        process = spawn([PYTHON, *argv], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    service = Service(name, kind, process, log, env, url)
    try:
        return wait_ready(service, timeout)
    except BaseException:
        service.stop()
        raise
