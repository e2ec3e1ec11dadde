"""A real S3 API on 127.0.0.1 for tests and benches: `moto_server` as a subprocess (the HTTP
server, never a mocked client), with buckets made on demand and the environment that points a
process's blob store at one."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import uuid
from pathlib import Path

import boto3
import httpx

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
            argv = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)]
            self.process = spawn(argv, stdout=out, stderr=subprocess.STDOUT)
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
