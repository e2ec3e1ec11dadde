"""A real S3 API on 127.0.0.1 for tests and benches: moto's S3 server as a subprocess (the HTTP
server, never a mocked client), with buckets made on demand and the environment that points a
process's blob store at one.

`python -m harness.s3_server PORT` runs what `moto_server` runs, but hands moto one request at a
time: its in-memory S3 is not thread-safe where two PUTs overwrite one key at once (the first
reads the buffer the second has just closed, and answers 500), which real S3 and MinIO never do
and which breedbot's threads and hosts do (two uploads of the same photo, two promotes).
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import boto3
import httpx

from harness import REPO
from harness.waiting import wait_until
from ops.processes import spawn, stop_group
from ops.redis_server import free_port

# moto accepts any credentials; real-looking ones keep boto3 from searching for others.
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "breedbot-test",
    "AWS_SECRET_ACCESS_KEY": "breedbot-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}


class S3Server:
    """One moto_server child process on a free port; stops only what it started."""

    def __init__(self, log: Path, port: int = 0) -> None:
        self.log = Path(log)
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        """The endpoint URL (AWS_ENDPOINT_URL) of the server."""
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> S3Server:
        """Launch the server and wait until it answers HTTP."""
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            argv = [sys.executable, "-m", "harness.s3_server", str(self.port)]
            self.process = spawn(argv, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
        process = self.process
        try:
            wait_until(lambda: process.poll() is not None or self._answers(), timeout, "moto")
            if process.poll() is not None:
                raise RuntimeError(f"moto_server exited:\n{self.log.read_text()[-3000:]}")
        except BaseException:
            self.stop()
            raise
        return self

    def _answers(self) -> bool:
        with contextlib.suppress(httpx.TransportError):
            return httpx.get(f"{self.endpoint}/moto-api/", timeout=1).status_code == 200
        return False

    def env(self, bucket: str, prefix: str = "") -> dict[str, str]:
        """What a process needs for its blob store in `bucket`: STORE_URL and boto3's AWS_*."""
        url = f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"
        return {"STORE_URL": url, "AWS_ENDPOINT_URL": self.endpoint, **CREDENTIALS}

    def create_bucket(self, name: str | None = None) -> str:
        """A new empty bucket (a fresh name unless given); returns its name."""
        name = name or f"breedbot-{uuid.uuid4().hex[:12]}"
        client = boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            region_name=CREDENTIALS["AWS_DEFAULT_REGION"],
        )
        client.create_bucket(Bucket=name)
        client.close()
        return name

    def stop(self, timeout: float = 10.0) -> None:
        """Stop our own server (its buckets live in memory and go with it)."""
        process, self.process = self.process, None
        if process is not None:
            stop_group(process, timeout)


def one_at_a_time(app: Callable[..., Iterable[bytes]]) -> Callable[..., Iterable[bytes]]:
    """The WSGI `app` behind a lock: connections stay concurrent, requests run one by one."""
    lock = threading.Lock()

    def serialized(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        with lock:
            return list(app(environ, start_response))

    return serialized


def main() -> None:
    """Serve moto's S3 (every moto service, as moto_server does) on 127.0.0.1:PORT."""
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import run_simple

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("port", type=int)
    port = parser.parse_args().port
    app = one_at_a_time(DomainDispatcherApplication(create_backend_app))
    run_simple("127.0.0.1", port, app, threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
