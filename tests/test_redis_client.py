"""One Redis client factory and one patched transport for redis://, rediss:// and sentinel://."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
import redis
from celery import Celery

from broker import transport
from broker.config import client_config, consumer_config
from broker.redis_client import async_redis_client, parse_sentinel_url, redis_client
from broker.settings import SentinelSettings
from ops.redis_server import RedisServer
from worker.settings import WorkerSettings

SENTINELS = "sentinel://:pw@10.0.0.1:26379/2;sentinel://10.0.0.2:26380;sentinel://10.0.0.3"
OPTIONS = SentinelSettings(redis_master_name="breedbot", redis_sentinel_password="s3cret")


def test_a_sentinel_url_names_every_sentinel_and_the_masters_db_and_password() -> None:
    parsed = parse_sentinel_url(SENTINELS)
    assert parsed.sentinels == [("10.0.0.1", 26379), ("10.0.0.2", 26380), ("10.0.0.3", 26379)]
    assert (parsed.db, parsed.password, parsed.username) == (2, "pw", None)
    with pytest.raises(ValueError, match="sentinel://"):
        parse_sentinel_url("redis://10.0.0.1:6379;sentinel://10.0.0.2")


@pytest.mark.parametrize(
    ("url", "patched"),
    [
        ("redis://:pw@127.0.0.1:6379/0", transport.Transport),
        ("rediss://:pw@redis.example.com:6380/0", transport.Transport),
        (SENTINELS, transport.SentinelTransport),
    ],
)
def test_every_redis_scheme_gets_the_patched_transport_even_after_a_switch(
    url: str, patched: type
) -> None:
    app = Celery("t", set_as_current=False, config_source=client_config(url, OPTIONS))
    try:
        with app.connection_for_write() as conn:
            assert type(conn.transport) is patched
            assert conn.transport.Channel.QoS is transport.QoS
            # kombu moves to the next URL of a ';' list on a connection error, and takes the
            # transport from that URL's scheme: it must still be the patched one.
            conn.switch(url.split(";")[-1])
            assert type(conn.transport) is patched
    finally:
        app.close()


def test_sentinel_config_names_the_master_and_the_sentinels_password_everywhere() -> None:
    settings = WorkerSettings(
        redis_url=SENTINELS, redis_master_name="breedbot", redis_sentinel_password="s3cret"
    )
    config = consumer_config(settings, concurrency=2)
    for options in ("broker_transport_options", "result_backend_transport_options"):
        assert config[options]["master_name"] == "breedbot"
        assert config[options]["sentinel_kwargs"] == {"password": "s3cret"}
        assert config[options]["visibility_timeout"] == settings.broker_visibility_timeout
    # Every part carries the master's password and database: kombu reads them from the part
    # it switched to.
    every = ";".join(f"sentinel://:pw@{a}/2" for a in ("10.0.0.1:26379", "10.0.0.2:26380",
                                                         "10.0.0.3:26379"))  # fmt: skip
    assert config["broker_url"] == config["result_backend"] == every
    assert config["broker_transport"] == transport.SENTINEL_TRANSPORT
    # A password with URL-reserved characters survives the copying.
    odd = "sentinel://:p%40ss%2Fw@h1:1/0;sentinel://h2:2"
    assert (
        client_config(odd)["broker_url"]
        == "sentinel://:p%40ss%2Fw@h1:1/0;sentinel://:p%40ss%2Fw@h2:2/0"
    )
    assert parse_sentinel_url(odd).password == "p@ss/w"


def test_tls_checks_the_certificate_unless_the_url_says_otherwise() -> None:
    config = client_config("rediss://:pw@redis.example.com:6380/0")
    assert config["broker_use_ssl"] == {"ssl_cert_reqs": ssl.CERT_REQUIRED}
    assert config["redis_backend_use_ssl"] == {"ssl_cert_reqs": ssl.CERT_REQUIRED}
    checked = redis_client("rediss://:pw@redis.example.com:6380/0")
    pool = checked.connection_pool
    assert pool.connection_class is redis.SSLConnection
    assert pool.connection_kwargs.get("ssl_cert_reqs", "required") == "required"
    unchecked = redis_client("rediss://:pw@redis.example.com:6380/0?ssl_cert_reqs=none")
    assert unchecked.connection_pool.connection_kwargs["ssl_cert_reqs"] == "none"


def test_sentinel_clients_ask_the_sentinels_with_their_own_password() -> None:
    for client in (
        redis_client(SENTINELS, sentinel=OPTIONS),
        async_redis_client(SENTINELS, sentinel=OPTIONS),
    ):
        pool = client.connection_pool
        assert pool.service_name == "breedbot"
        assert pool.connection_kwargs["password"] == "pw"
        assert pool.connection_kwargs["db"] == 2
        sentinels = pool.sentinel_manager.sentinels
        assert [s.connection_pool.connection_kwargs["port"] for s in sentinels] == [
            26379, 26380, 26379,
        ]  # fmt: skip
        assert {s.connection_pool.connection_kwargs["password"] for s in sentinels} == {"s3cret"}


def test_a_published_embedded_server_needs_its_generated_password(tmp_path: Path) -> None:
    url_file = tmp_path / "url"
    with RedisServer(tmp_path / "redis", url_file=url_file) as server:
        assert server.password and server.password in url_file.read_text()
        assert url_file.stat().st_mode & 0o777 == 0o600
        assert server.password not in " ".join(server.process.args)  # not in `ps`
        anonymous = redis.Redis(port=server.port)
        with pytest.raises(redis.AuthenticationError):
            anonymous.ping()
        assert redis_client(url_file.read_text().strip()).ping()
