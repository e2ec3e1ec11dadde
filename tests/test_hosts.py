"""worker/hosts.py and the model holder's status on a real redis-server: what each host says it
serves, its expiry, a malformed entry skipped; and `breedbot health` reading them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis

import contract
from ops import cli
from ops.redis_server import RedisServer
from worker import hosts


@pytest.fixture
def client(registry_server: RedisServer) -> redis.Redis:
    """A flushed client of the registry tests' redis-server."""
    client = redis.Redis.from_url(registry_server.url)
    client.flushall()
    return client


def _status(host: str, error: str | None = None) -> contract.HostStatus:
    return contract.HostStatus(host, 1, "litert-int8", "2026-12-07T23:50:00+00:00", 2, error)


def test_each_host_says_what_it_serves_until_it_stops_saying_it(client: redis.Redis) -> None:
    hosts.publish(client, _status("b@x", "cannot load version 2: BadRecord: ..."))
    hosts.publish(client, _status("a@x"))
    hosts.publish(client, _status("c@x"))
    client.set(contract.served_key("c@x"), b"{not json")  # written by something else
    hosts.publish(client, _status("d@x"))
    client.delete(contract.served_key("d@x"))  # expired: d@x died
    assert hosts.read_all(client) == [
        _status("a@x"),
        _status("b@x", "cannot load version 2: BadRecord: ..."),
    ]
    assert [s.healthy for s in hosts.read_all(client)] == [True, False]
    # A host that stops refreshing (dead) drops out when its key expires.
    assert 0 < client.ttl(contract.served_key("a@x")) <= contract.SERVED_TTL_SECONDS


def test_breedbot_health_exits_1_and_says_why_for_a_failing_host(
    client: redis.Redis,
    registry_server: RedisServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("REDIS_URL", registry_server.url)
    monkeypatch.setenv("VAR_DIR", str(tmp_path))
    from worker.settings import get_settings

    get_settings.cache_clear()
    try:
        assert cli.main(["health"]) == 1  # nobody has said anything
        hosts.publish(client, _status("a@x"))
        assert cli.main(["health"]) == 0
        hosts.publish(client, _status("b@x", "cannot load version 2: FileNotFoundError: gone"))
        assert cli.main(["health"]) == 1
        assert cli.main(["health", "--host", "a@x"]) == 0
        assert cli.main(["health", "--host", "gone@x"]) == 1
        out = capsys.readouterr().out
        assert "b@x: serves version 1 through litert-int8" in out
        assert "UNHEALTHY, cannot load version 2: FileNotFoundError: gone" in out
        assert "gone@x has not said what it serves" in out
    finally:
        get_settings.cache_clear()
    assert json.loads(client.get(contract.served_key("a@x")))["host"] == "a@x"
