"""Many hosts, no shared disk: two worker "hosts" on one Redis, each with its own MODELS_DIR,
BREEDBOT_HOME and FEEDBACK_DIR, sharing only Redis and the blob store.

Retrains, promotes and rollbacks reach both; Redis restarted (AOF) or emptied keeps the registry;
a damaged blob is refused and the active version keeps serving. How fast a host switches is
measured by bench/switch_bench.py, not asserted here.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest
from celery import Celery

import contract
from harness.s3_server import S3Server
from harness.services import Service, answered_versions, served_version
from harness.stack import Stack
from harness.user import csv_sample_zip
from harness.waiting import wait_until
from store import blobs
from worker import hosts as host_status
from worker.celery_app import create_app
from worker.settings import WorkerSettings

pytestmark = pytest.mark.slow

# Well past a switch (a poll every 0.5 s, a fetch and a load take under a second) on a busy CI.
SWITCH_SECONDS = 20
# Issue 21's bar for the default backbone on two hosts: every answer from the new version within
# this long after the retrain (the host that did not train converts its backbone meanwhile)...
ALL_NEW_SECONDS = 60
# ...and none from it this long after `breedbot rollback`.
ROLLED_BACK_SECONDS = 10
ANSWERS = 24


class Hosts:
    """The stack, its two workers and a client app."""

    def __init__(self, stack: Stack, workers: dict[str, Service], app: Celery) -> None:
        self.stack = stack
        self.workers = workers
        self.app = app

    def dir(self, host: str, name: str) -> Path:
        """A host's own folder `name` (models, home, feedback)."""
        return self.stack.root / host / name

    def serving(self, host: str) -> int | None:
        """The version a host's worker last said it serves."""
        return served_version(self.workers[host])

    def wait_both_serve(self, version: int) -> None:
        """Until both hosts serve `version`."""
        wait_until(
            lambda: all(self.serving(h) == version for h in self.workers),
            SWITCH_SECONDS,
            what=f"both hosts to serve version {version}",
        )

    def call(self, name: str, *args: object, timeout: float = 600) -> object:
        """A task by name through the queue, as the bot and the CLI send it."""
        return self.app.send_task(name, args=list(args)).get(timeout=timeout)

    def retrain(self, caption_params: dict[str, object], **request: object) -> dict:
        """Retrain on the csv-sample zip; the result dict (Refused raises)."""
        dataset = contract.DatasetRef(contract.encode_bytes(csv_sample_zip()), "csv-sample.zip")
        payload = contract.RetrainRequest(dataset.to_dict(), caption_params, **request).to_dict()
        return self.call(contract.RETRAIN, payload)  # type: ignore[return-value]


@pytest.fixture(scope="module", params=["local", "s3"])
def hosts(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, breedbot_home: Path
) -> Iterator[Hosts]:
    """Host a (the session's BREEDBOT_HOME) and host b (an empty one of its own), sharing a
    store folder, or a bucket of a real S3 API (moto's server). Their retrains keep the suite's
    Lite0 pin (tests/conftest.py): numbering, switching and the store are beside the backbone;
    `auto_hosts` runs the default."""
    root = tmp_path_factory.mktemp("hosts")
    env: dict[str, str] = {}
    if request.param == "s3":
        server: S3Server = request.getfixturevalue("s3_server")
        env = server.env(server.create_bucket(), "breedbot")
    with (
        pytest.MonkeyPatch.context() as patch,
        Stack(root, redis_password=None).running(**env) as stack,
    ):
        for name, value in env.items():  # this process reads the bucket too (Stack.registry)
            patch.setenv(name, value)
        homes = {"a": breedbot_home, "b": root / "b" / "home"}
        workers = {
            host: stack.start_worker(
                host,
                MODELS_DIR=str(root / host / "models"),
                FEEDBACK_DIR=str(root / host / "feedback"),
                BREEDBOT_HOME=str(home),
                BOTTLENECK_DIR=str(root / host / "bottlenecks"),
            )
            for host, home in homes.items()
        }
        app = create_app(WorkerSettings(redis_url=stack.redis_url(), var_dir=root / "client"))
        try:
            yield Hosts(stack, workers, app)
        finally:
            app.close()


STEPS = {"how_many_training_steps": 30, "flip_left_right": False}


@pytest.fixture(scope="module")
def auto_hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hosts]:
    """Two hosts as users deploy them: the default backbone choice (`auto`, which the rest of
    the suite pins to Lite0), each with its own empty caches, one store folder."""
    root = tmp_path_factory.mktemp("auto-hosts")
    with Stack(root, redis_password=None).running(RETRAIN_ARCHITECTURE="auto") as stack:
        workers = {
            host: stack.start_worker(
                host,
                MODELS_DIR=str(root / host / "models"),
                FEEDBACK_DIR=str(root / host / "feedback"),
                BREEDBOT_HOME=str(root / host / "home"),
                BOTTLENECK_DIR=str(root / host / "bottlenecks"),
            )
            for host in ("a", "b")
        }
        app = create_app(WorkerSettings(redis_url=stack.redis_url(), var_dir=root / "client"))
        try:
            yield Hosts(stack, workers, app)
        finally:
            app.close()


def _breedbot(hosts: Hosts, *argv: str) -> subprocess.CompletedProcess[str]:
    """`breedbot ARGV` as an admin runs it, with the stack's settings."""
    command = [sys.executable, "-m", "ops.cli", *argv]
    return subprocess.run(command, env=hosts.stack.env, capture_output=True, text=True, timeout=120)


def test_an_auto_retrain_is_served_by_every_host_and_a_rollback_leaves_it(
    auto_hosts: Hosts,
) -> None:
    """Issue 21's bar: after a retrain through the queue, every one of 24 answers comes from the
    new version within 60 s, whichever backbone `auto` picked and whichever host trained it;
    after `breedbot rollback`, none does within 10 s."""
    result = contract.RetrainResult.from_dict(auto_hosts.retrain(STEPS, min_accuracy=0.0))
    assert result.activated
    new = result.version
    wait_until(
        lambda: set(answered_versions(auto_hosts.app, ANSWERS)) == {new},
        ALL_NEW_SECONDS,
        what=f"all {ANSWERS} answers from version {new}",
    )
    statuses = host_status.read_all(auto_hosts.stack.registry().client)
    assert sorted(s.host.split("@")[0] for s in statuses) == ["a", "b"]
    assert all(s.version == new and s.healthy for s in statuses), statuses
    # What an admin sees: each host under the version it serves, and a passing health check.
    listed = _breedbot(auto_hosts, "models").stdout
    for status in statuses:
        assert f"{status.host}: serves version {new} through" in listed, listed
    assert _breedbot(auto_hosts, "health").returncode == 0
    rollback = _breedbot(auto_hosts, "rollback")
    assert rollback.returncode == 0 and "active version: 0" in rollback.stdout, rollback
    wait_until(
        lambda: new not in answered_versions(auto_hosts.app, ANSWERS),
        ROLLED_BACK_SECONDS,
        what=f"no answer from version {new} after the rollback",
    )


def test_a_retrain_on_either_host_is_served_by_both(hosts: Hosts) -> None:
    result = contract.RetrainResult.from_dict(hosts.retrain(STEPS, min_accuracy=0.0))
    assert result.version == 1 and result.activated
    hosts.wait_both_serve(1)
    record = hosts.stack.registry().record(1)
    # Each host has version 1 in its own cache; the one that did not train it fetched the bundle.
    folders = [hosts.dir(h, "models") / "1" for h in hosts.workers]
    assert all((f / "retrained_labels.txt").is_file() for f in folders)
    fetched = [f for f in folders if not (f / "saved_model").exists()]
    assert len(fetched) == 1
    assert sorted(p.relative_to(fetched[0]).as_posix() for p in fetched[0].rglob("*.*")) == sorted(
        [*record["bundle"], "litert/backbone_float.tflite", "litert/gate_float.tflite"]
    )
    # Only what this version alone has is stored: each host makes the rest from its own home.
    shared = ("backbone_float.tflite", "gate_float.tflite")  # from each host's own home
    assert not [k for k in record["bundle"] if k.startswith("saved_model/") or k.endswith(shared)]
    assert "head.npz" in record["bundle"]


def test_promote_and_rollback_move_both_hosts(hosts: Hosts) -> None:
    switched = hosts.call(contract.PROMOTE, contract.PromoteRequest(0).to_dict(), timeout=60)
    assert contract.SwitchResult.from_dict(switched).active_version == 0
    hosts.wait_both_serve(0)
    back = hosts.call(contract.ROLLBACK, contract.RollbackRequest().to_dict(), timeout=60)
    assert contract.SwitchResult.from_dict(back).active_version == 1
    hosts.wait_both_serve(1)


def test_two_retrains_at_once_get_distinct_numbers_and_the_gate_holds(hosts: Hosts) -> None:
    def outcome(future: Future) -> contract.RetrainResult:
        """The version's report, live or kept out by the gate (a failed job since #23)."""
        try:
            return contract.RetrainResult.from_dict(future.result())
        except contract.Refused as refused:
            report = contract.gate_report(refused)
            assert report is not None, refused
            return report

    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(hosts.retrain, STEPS, min_accuracy=0.0) for _ in range(2)]
        results = [outcome(f) for f in futures]
    assert sorted(r.version for r in results) == [2, 3]
    reg = hosts.stack.registry()
    gates = {v: reg.record(v)["gate"] for v in (2, 3)}
    assert all(gates[r.version]["passed"] == r.activated for r in results)
    passed = [v for v, gate in gates.items() if gate["passed"]]
    if len(passed) == 2:
        # Both went live, so the second was compared with the first, not with version 1.
        assert gates[2]["active_version"] == 3 or gates[3]["active_version"] == 2, gates
    active = reg.active_version()
    assert active == (max(passed, key=lambda v: gates[v]["active_version"]) if passed else 1)
    hosts.wait_both_serve(active)


def test_redis_restarted_with_aof_keeps_the_registry(hosts: Hosts) -> None:
    reg = hosts.stack.registry()
    before = (reg.records(), reg.pointer())
    hosts.stack.stop_redis()
    hosts.stack.start_redis()
    reg = hosts.stack.registry()
    assert (reg.records(), reg.pointer()) == before
    hosts.wait_both_serve(before[1]["version"])


def test_redis_back_empty_gets_the_registry_back_from_the_store(hosts: Hosts) -> None:
    reg = hosts.stack.registry()
    before = (reg.records(), reg.active_version())
    hosts.stack.stop_redis()
    shutil.rmtree(hosts.stack.root / "redis")  # a new, empty volume
    hosts.stack.start_redis()
    # The workers notice the empty registry and rebuild it from the store by themselves.
    wait_until(lambda: not hosts.stack.registry().is_empty(), SWITCH_SECONDS, what="a rebuild")
    reg = hosts.stack.registry()
    assert (reg.records(), reg.active_version()) == before
    hosts.wait_both_serve(before[1])
    assert reg.next_version() == max(before[0]) + 1  # numbers continue after the rebuilt ones


@pytest.mark.parametrize("fault", ["damaged", "missing"])
def test_a_damaged_or_missing_blob_is_refused_and_the_active_version_stays(
    hosts: Hosts, fault: str
) -> None:
    reg = hosts.stack.registry()
    active = reg.active_version()
    spare = next(v for v in sorted(reg.records(), reverse=True) if v != active)
    target = blobs.blob_key(reg.record(spare)["bundle"]["retrained_labels.txt"])
    original = reg.store.get(target)
    if fault == "damaged":
        reg.store.put(target, b"not the labels")
    else:
        reg.store.delete(target)
    try:
        with pytest.raises(contract.Refused) as refused:
            hosts.call(contract.PROMOTE, contract.PromoteRequest(spare).to_dict(), timeout=60)
        assert refused.value.problem == f"store_{fault}"
        assert "active version is unchanged" in refused.value.message
        assert reg.active_version() == active
        assert all(hosts.serving(h) == active for h in hosts.workers)
        assert all(w.alive() for w in hosts.workers.values())
    finally:
        reg.store.put(target, original)
