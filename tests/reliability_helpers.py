"""A self-contained breedbot stack for fault injection, shared by the reliability tests and
`bench/reliability.py` / `bench/load_bench.py`: the Bot API emulator in this process, a real
redis-server (AOF on), real worker and bot subprocesses, each in its own process group.

Scenario functions take a running `Stack` and a size, do the fault, and return counts; the
tests assert on them at a small size, the bench runs them at full size and writes the table.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import random
import re
import signal
import stat
import string
import struct
import subprocess
import sys
import threading
import time
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import redis

from fakegram.api import FakeTelegram, PlaygroundClient, serve_in_thread
from model import registry
from ops.processes import spawn, stop_group
from ops.redis_server import RedisServer

REPO = Path(__file__).resolve().parents[1]
DATASETS = REPO.parent / "shared" / "datasets"
TOKEN = "1000001:reliability-secret-token"
REDIS_PASSWORD = "reliability-redis-secret"
ADMIN = 777
READY_SECONDS = 240


def pet_photos(n: int) -> list[bytes]:
    """`n` real pet photos, spread over the breeds (cycled when `n` exceeds the set)."""
    files = sorted((DATASETS / "pets-dev").rglob("*.jpg"))
    spread = files[::3] + files[1::3] + files[2::3]
    return [spread[i % len(spread)].read_bytes() for i in range(n)]


@dataclass
class Proc:
    """One service subprocess (its own process group) and its log file."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def log_text(self) -> str:
        """Everything the process wrote so far."""
        return self.log.read_text(errors="replace")

    def alive(self) -> bool:
        """True while the process runs."""
        return self.process.poll() is None

    def rss_mb(self) -> float:
        """Resident memory of the process group leader and its children, in MB."""
        leader = psutil.Process(self.process.pid)
        procs = [leader, *leader.children(recursive=True)]
        return sum(p.memory_info().rss for p in procs) / 2**20

    def kill(self) -> None:
        """SIGKILL the whole group, as in a crash."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


@dataclass
class Stack:
    """Redis + emulator + workers + bot under `root`; start it with `running()`."""

    root: Path
    env: dict[str, str] = field(default_factory=dict)
    redis_server: RedisServer | None = None
    fake: FakeTelegram | None = None
    url: str = ""
    procs: list[Proc] = field(default_factory=list)
    bot: Proc | None = None
    replier: Proc | None = None

    @property
    def models_root(self) -> Path:
        """The shared versions folder of this stack."""
        return Path(self.env["MODELS_DIR"])

    def redis_url(self) -> str:
        """The broker URL, password included."""
        assert self.redis_server is not None
        return f"redis://:{REDIS_PASSWORD}@127.0.0.1:{self.redis_server.port}/0"

    def start_redis(self) -> None:
        """Start (or restart, on the same port and AOF file) the password-protected Redis."""
        port = self.redis_server.port if self.redis_server else 0
        self.redis_server = RedisServer(self.root / "redis", port=port)
        self.redis_server.start()
        # RedisServer has no password option; CONFIG SET is as good and survives in this run.
        client = redis.Redis(port=self.redis_server.port)
        client.config_set("requirepass", REDIS_PASSWORD)
        client.close()

    def stop_redis(self) -> None:
        """SIGTERM Redis (it flushes its AOF) and wait for it to exit."""
        assert self.redis_server is not None and self.redis_server.process is not None
        stop_group(self.redis_server.process, 10)
        self.redis_server.process = None

    def redis(self) -> redis.Redis:
        """A client for this stack's Redis (text replies)."""
        return redis.Redis.from_url(self.redis_url(), decode_responses=True, socket_timeout=10)

    def start(self, name: str, argv: list[str], **env: str) -> Proc:
        """Start `python ARGV` with the stack's environment plus `env`."""
        log = self.root / "logs" / f"{name}-{len(self.procs)}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("wb") as out:
            process = spawn(
                [sys.executable, *argv],
                cwd=REPO,
                env={**self.env, "REDIS_URL": self.redis_url(), **env},
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.procs.append(Proc(name, process, log))
        return self.procs[-1]

    def start_worker(self, name: str = "w", **env: str) -> Proc:
        """A worker on every queue; returns once it consumes (model loaded and warmed up)."""
        argv = ["-m", "ops.cli", "worker", "-n", f"{name}@%h", "-c", "8"]
        proc = self.start(name, argv, **env)
        deadline = time.monotonic() + READY_SECONDS
        while " ready." not in proc.log_text():
            if not proc.alive() or time.monotonic() > deadline:
                raise RuntimeError(f"worker {name} did not start:\n{proc.log_text()[-3000:]}")
            time.sleep(0.2)
        return proc

    def start_replier(self) -> Proc:
        """The reply sender (`breedbot replier`); returns once it consumes."""
        argv = ["-m", "ops.cli", "replier", "-n", f"replier{len(self.procs)}@%h"]
        self.replier = self.start("replier", argv)
        if not wait_until(lambda: " ready." in self.replier.log_text(), READY_SECONDS):
            raise RuntimeError(f"the replier did not start:\n{self.replier.log_text()[-3000:]}")
        return self.replier

    def start_bot(self, **env: str) -> Proc:
        """The real bot (`python -m bot.app`) long polling the emulator, and its reply sender."""
        if self.replier is None or not self.replier.alive():
            self.start_replier()
        self.bot = self.start("bot", ["-m", "bot.app"], **env)
        if not wait_until(lambda: "Application started" in self.bot.log_text(), READY_SECONDS):
            raise RuntimeError(f"the bot did not start:\n{self.bot.log_text()[-3000:]}")
        return self.bot

    def all_logs(self) -> str:
        """Every service log of this stack, concatenated (Redis's included)."""
        logs = [*sorted((self.root / "logs").glob("*.log")), self.root / "redis" / "redis.log"]
        return "\n".join(p.read_text(errors="replace") for p in logs if p.is_file())

    def client(self) -> PlaygroundClient:
        """The user's side of the emulator."""
        return PlaygroundClient(self.url)

    @contextlib.contextmanager
    def running(self, **env: str) -> Iterator[Stack]:
        """Emulator and Redis up for the block; every process started in it is stopped after."""
        var = self.root / "var"
        self.env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "TELEGRAM_BOT_TOKEN": TOKEN,
            "VAR_DIR": str(var),
            "MODELS_DIR": str(var / "models"),
            "BOTTLENECK_DIR": str(var / "bottlenecks"),
            "ADMIN_IDS": str(ADMIN),
            "RATE_LIMIT_COUNT": "10000",
            "RELOAD_INTERVAL": "0.5",
            **env,
        }
        self.fake = FakeTelegram(TOKEN)
        with serve_in_thread(self.fake.app()) as url:
            self.url = url
            self.env["TELEGRAM_API_URL"] = url
            self.start_redis()
            try:
                yield self
            finally:
                for proc in reversed(self.procs):
                    stop_group(proc.process, 10)
                if self.redis_server is not None:
                    self.redis_server.stop()


# --- The user's side ---------------------------------------------------------------------------


def replies_to(events: list[dict[str, Any]], message_id: int) -> list[dict[str, Any]]:
    """Bot messages sent as a reply to the user's message `message_id`."""
    return [
        e["message"]
        for e in events
        if e["type"] == "sent"
        and e["message"].get("reply_to_message", {}).get("message_id") == message_id
    ]


def all_events(fake: FakeTelegram, chat_id: int) -> list[dict[str, Any]]:
    """A snapshot of every emulator event of one chat."""
    return [e for e in list(fake.events) if e["chat_id"] == chat_id]


@dataclass
class Sent:
    """One photo a simulated user sent."""

    chat_id: int
    message_id: int
    sent_at: float


def send_photos(
    stack: Stack, photos: list[bytes], users: int, first_user: int = 1000, pace: float = 0.0
) -> list[Sent]:
    """Send the photos round-robin from `users` users in parallel, without waiting for answers."""
    client = stack.client()

    def user(u: int) -> list[Sent]:
        sent = []
        for photo in photos[u::users]:
            at = time.time()
            message = client.send(first_user + u, file=photo)["message"]
            sent.append(Sent(first_user + u, message["message_id"], at))
            time.sleep(pace)
        return sent

    try:
        with ThreadPoolExecutor(users) as pool:
            return [s for batch in pool.map(user, range(users)) for s in batch]
    finally:
        client.close()


def answers(stack: Stack, sent: list[Sent]) -> dict[tuple[int, int], list[dict[str, Any]]]:
    """Every bot reply to each sent photo, keyed by (chat, message)."""
    assert stack.fake is not None
    by_chat = {s.chat_id: all_events(stack.fake, s.chat_id) for s in sent}
    return {(s.chat_id, s.message_id): replies_to(by_chat[s.chat_id], s.message_id) for s in sent}


def wait_answered(stack: Stack, sent: list[Sent], timeout: float) -> dict[str, Any]:
    """Wait until every photo has a reply (or `timeout`); counts of answered, twice, missing."""
    deadline = time.monotonic() + timeout
    while True:
        got = answers(stack, sent)
        missing = [k for k, v in got.items() if not v]
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    time.sleep(2)  # a duplicate would arrive right after the first answer
    got = answers(stack, sent)
    texts = [(m.get("caption") or m.get("text") or "") for v in got.values() for m in v]
    return {
        "sent": len(sent),
        "answered": sum(bool(v) for v in got.values()),
        "answered_twice": sum(len(v) > 1 for v in got.values()),
        "missing": sum(not v for v in got.values()),
        "errors": sum(t.startswith(("Sorry", "Desculpe")) for t in texts),
    }


def stuck_jobs(stack: Stack) -> int:
    """Messages still queued or unacknowledged in Redis (0 once every job is done)."""
    client = stack.redis()
    try:
        queued = sum(client.llen(q) for q in ("infer", "train", "control"))
        return queued + client.hlen("unacked")
    finally:
        client.close()


def wait_drained(stack: Stack, timeout: float) -> int:
    """Wait for the queues to empty; the number of stuck jobs left."""
    deadline = time.monotonic() + timeout
    while (left := stuck_jobs(stack)) and time.monotonic() < deadline:
        time.sleep(0.5)
    return left


# --- Scenarios ---------------------------------------------------------------------------------

# Fast redelivery of a killed worker's jobs: the visibility timeout must exceed the retrain hard
# limit (settings enforce it), so a deployment that wants this keeps retrains short.
FAST_REDELIVERY = {
    "RETRAIN_SOFT_TIME_LIMIT": "4",
    "RETRAIN_TIME_LIMIT": "5",
    "VISIBILITY_TIMEOUT": "8",
    "UNACKED_RESTORE_INTERVAL": "1",
}


def _in_background(work: Callable[[], Any]) -> Callable[[], Any]:
    """Run `work` in a thread; the returned function joins it and gives its result."""
    box: list[Any] = []
    thread = threading.Thread(target=lambda: box.append(work()), daemon=True)
    thread.start()

    def join() -> Any:
        thread.join()
        return box[0]

    return join


def worker_killed(stack: Stack, n_photos: int, users: int, kills: int, seed: int = 5) -> dict:
    """Scenario 1: photos from many users while the worker is SIGKILLed `kills` times."""
    # Services are spawned from the main thread only: PR_SET_PDEATHSIG fires when the spawning
    # *thread* exits, so a worker started from a helper thread would get SIGTERM with it.
    worker = stack.start_worker("w1", **FAST_REDELIVERY)
    stack.start_bot()
    rng = random.Random(seed)
    started = time.monotonic()
    sending = _in_background(lambda: send_photos(stack, pet_photos(n_photos), users, pace=0.1))
    window = n_photos * 0.1 / users
    for n in range(kills):
        time.sleep(rng.uniform(0.2, 0.8) * window / kills)
        worker.kill()
        worker = stack.start_worker(f"w{n + 2}", **FAST_REDELIVERY)
    sent = sending()
    counts = wait_answered(stack, sent, timeout=120 + n_photos)
    counts["stuck_jobs"] = wait_drained(stack, 60)
    counts["kills"] = kills
    counts["seconds"] = round(time.monotonic() - started, 1)
    return counts


# --- Retrains through the bot ------------------------------------------------------------------

TRAINING = "🏋️ Training step"
FINISHED = ("✅ Model v", "❌ Retrain failed", "Sorry, that job failed")


def csv_sample_zip() -> bytes:
    """The Kaggle-style csv-sample (3 breeds x 20 photos) as a zip."""
    from ops.cli import zip_dataset

    return zip_dataset(DATASETS / "csv-sample")


def send_retrain(
    client: PlaygroundClient, zip_bytes: bytes, caption: str, user: int = ADMIN, **form: Any
) -> int:
    """A user (the admin) sends a zip with a `/retrain ...` caption; returns its message id."""
    sent = client.send(
        user,
        file=zip_bytes,
        kind="document",
        filename="data.zip",
        mime_type="application/zip",
        caption=caption,
        user_id=user,
        **form,
    )
    return sent["message"]["message_id"]


def _texts(fake: FakeTelegram, chat_id: int, kinds: tuple[str, ...]) -> list[str]:
    return [
        e["message"].get("text") or e["message"].get("caption") or ""
        for e in all_events(fake, chat_id)
        if e["type"] in kinds
    ]


def finals(fake: FakeTelegram) -> list[str]:
    """Final retrain messages seen in the admin's chat (edits of a status message or texts)."""
    return [t for t in _texts(fake, ADMIN, ("edited", "sent")) if t.startswith(FINISHED)]


def wait_until(check: Callable[[], Any], timeout: float, interval: float = 0.2) -> Any:
    """Poll `check` until it is truthy (returns it) or `timeout` passes (returns the last value)."""
    deadline = time.monotonic() + timeout
    while not (value := check()) and time.monotonic() < deadline:
        time.sleep(interval)
    return value


def registry_state(root: Path) -> dict[str, Any]:
    """What the registry exposes: the active version, the listed ones, and stray folders."""
    listed = [info.version for info in registry.list_versions(root)]
    folders = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    unlisted = [f for f in folders if f.isdigit() and int(f) not in listed]
    return {"active": registry.active_version(root), "listed": listed, "half_written": unlisted}


def bot_restarted(stack: Stack, n_photos: int, users: int) -> dict:
    """Scenario 2: SIGKILL and restart the bot while photos and a retrain are in flight."""
    stack.start_worker("w1")
    stack.start_bot()
    client = stack.client()
    try:
        send_retrain(client, csv_sample_zip(), "/retrain steps=200 flip=0 min_acc=0")
        wait_until(lambda: _texts(stack.fake, ADMIN, ("sent",)), 30)
        sending = _in_background(lambda: send_photos(stack, pet_photos(n_photos), users, 2000))
        time.sleep(0.5)
        assert stack.bot is not None
        stack.bot.kill()
        sent = sending()  # these updates wait in the emulator until the new bot polls
        stack.start_bot()
        counts = wait_answered(stack, sent, timeout=120 + n_photos)
        done = wait_until(lambda: finals(stack.fake), 240)
        time.sleep(2)
        counts["retrain_final_messages"] = len(finals(stack.fake))
        counts["retrain_outcome"] = done[0].splitlines()[0] if done else "none"
        counts["stuck_jobs"] = wait_drained(stack, 30)
    finally:
        client.close()
    return counts


def _accepted(stack: Stack, sent: list[Sent]) -> bool:
    """True once the bot queued every photo (it shows "typing" right after publishing the job)."""
    assert stack.fake is not None
    actions = Counter(e["chat_id"] for e in list(stack.fake.events) if e["type"] == "action")
    wanted = Counter(s.chat_id for s in sent)
    return all(actions[chat] >= n for chat, n in wanted.items())


def redis_restarted(stack: Stack, n_photos: int, users: int, down_seconds: float = 3.0) -> dict:
    """Scenario 3: restart Redis (AOF on) mid-run; every photo gets an answer or a "try again".

    Photos the bot queued before the stop are answered (the AOF keeps the queue); photos sent
    while Redis is down get one quoted "please try again" (the bot cannot queue them and says so
    at once rather than holding them); photos after the restart are answered as usual.
    """
    worker = stack.start_worker("w1", **FAST_REDELIVERY)
    bot = stack.start_bot()
    half = n_photos // 2
    before = send_photos(stack, pet_photos(half), users, 3000)
    wait_until(lambda: _accepted(stack, before), 60, interval=0.02)
    stack.stop_redis()
    during = send_photos(stack, pet_photos(users), users, 3100)
    time.sleep(down_seconds)
    stack.start_redis()
    after = send_photos(stack, pet_photos(n_photos - half), users, 3200)
    counts: dict[str, Any] = {}
    for name, group in (("before", before), ("while_down", during), ("after", after)):
        got = wait_answered(stack, group, timeout=120)
        counts[name] = {k: got[k] for k in ("sent", "answered", "answered_twice", "errors")}
    counts["stuck_jobs"] = wait_drained(stack, 60)
    counts["worker_alive"] = worker.alive()
    counts["bot_alive"] = bot.alive()
    return counts


def killed_in_training(stack: Stack, retrain_limit: int = 60) -> dict:
    """Scenario 4: SIGKILL the worker during a retrain's training step, then start another."""
    limits = {
        "RETRAIN_SOFT_TIME_LIMIT": str(retrain_limit),
        "RETRAIN_TIME_LIMIT": str(retrain_limit + 5),
        "VISIBILITY_TIMEOUT": str(retrain_limit + 10),
        "UNACKED_RESTORE_INTERVAL": "1",
    }
    root = stack.models_root
    worker = stack.start_worker("w1", **limits)
    stack.start_bot()
    before = registry_state(root)
    client = stack.client()
    try:
        caption = "/retrain steps=20000 eval_every=1000 flip=0 min_acc=0"
        send_retrain(client, csv_sample_zip(), caption)
        training = wait_until(
            lambda: [t for t in _texts(stack.fake, ADMIN, ("edited",)) if t.startswith(TRAINING)],
            240,
        )
        worker.kill()
        killed = time.monotonic()
        cached = len(list((Path(stack.env["BOTTLENECK_DIR"])).rglob("*.npy")))
        after_kill = registry_state(root)
        stack.start_worker("w2", **limits)
        done = wait_until(lambda: finals(stack.fake), retrain_limit * 3 + 120)
        time.sleep(2)
        state = registry_state(root)
    finally:
        client.close()
    reused = None
    if done and done[0].startswith("✅"):
        record = json.loads((root / str(max(state["listed"])) / "metrics.json").read_text())
        reused = record.get("bottlenecks", {}).get("cached")
    return {
        "killed_in_training": bool(training),
        "active_before": before["active"],
        "active_after_kill": after_kill["active"],
        "listed_after_kill": after_kill["listed"],
        "half_written_listed": after_kill["half_written"] + state["half_written"],
        "bottlenecks_cached_at_kill": cached,
        "final_messages": len(finals(stack.fake)),
        "outcome": done[0].splitlines()[0] if done else "none",
        "seconds_kill_to_final": round(time.monotonic() - killed, 1),
        "rerun_bottlenecks_from_cache": reused,
        "active_after": state["active"],
    }


def _immutable(path: Path, on: bool) -> bool:
    """chattr +i/-i (even root cannot write into an immutable folder); False if unsupported."""
    flag = "+i" if on else "-i"
    done = subprocess.run(["chattr", flag, str(path)], capture_output=True, check=False)
    return done.returncode == 0


def storage_failures(stack: Stack, file_limit_mb: int = 2) -> dict:
    """Scenario 5: disk full (RLIMIT_FSIZE) and a read-only models folder while a version is
    written; each retrain gets a clear failure and the active version stays."""
    root = stack.models_root
    results: dict[str, Any] = {}
    limit = str(file_limit_mb * 2**20)
    client = stack.client()
    try:
        # Disk full: no file of the worker may grow past the limit (the SavedModel does).
        argv = [
            "-c",
            f"import resource,runpy,sys; resource.setrlimit(resource.RLIMIT_FSIZE, "
            f"({limit}, {limit})); sys.argv = ['breedbot', 'worker', '-n', 'full@%h', "
            "'-c', '8']; runpy.run_module('ops.cli', run_name='__main__')",
        ]
        worker = stack.start("full", argv)
        wait_until(lambda: " ready." in worker.log_text(), READY_SECONDS)
        stack.start_bot()
        before = registry_state(root)
        send_retrain(client, csv_sample_zip(), "/retrain steps=50 flip=0 min_acc=0")
        done = wait_until(lambda: finals(stack.fake), 300)
        results["disk_full"] = {
            "reply": done[0] if done else "none",
            "active_unchanged": registry_state(root)["active"] == before["active"],
            "listed": registry_state(root)["listed"],
            "worker_alive": worker.alive(),
        }
        stop_group(worker.process, 10)
        worker = stack.start_worker("ro")
        (root / registry.STAGING_DIR).mkdir(parents=True, exist_ok=True)
        (root / registry.LOCK_FILE).touch()
        if _immutable(root, True):
            try:
                seen = len(finals(stack.fake))
                send_retrain(client, csv_sample_zip(), "/retrain steps=50 flip=0 min_acc=0")
                done = wait_until(lambda: finals(stack.fake)[seen:], 300)
            finally:
                _immutable(root, False)
            results["read_only"] = {
                "reply": done[0] if done else "none",
                "active_unchanged": registry_state(root)["active"] == before["active"],
                "listed": registry_state(root)["listed"],
                "worker_alive": worker.alive(),
            }
        else:
            results["read_only"] = {"skipped": "chattr +i is not permitted here"}
    finally:
        client.close()
    return results


# --- Bad input ---------------------------------------------------------------------------------


def _encode(image: Any, fmt: str, **options: Any) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def _png_bomb(side: int = 30000) -> bytes:
    """A valid PNG header declaring side x side pixels over a few KB of zeros."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    rows = zlib.compress(b"\x00" * (side + 1) * 4)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")
    )


def bad_images() -> dict[str, tuple[bytes, bool]]:
    """The image corpus: name -> (bytes sent as `x.jpg`, whether a breed answer is expected)."""
    from PIL import Image

    photo = pet_photos(1)[0]
    upright = Image.open(io.BytesIO(photo)).convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° CW to view": the pixels are stored lying on their side
    frames = [upright, upright.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    grey16 = np.asarray(upright.convert("L"), dtype=np.uint16) * 257  # the full 16-bit range
    return {
        "truncated JPEG": (photo[: len(photo) // 3], False),
        "GIF named .jpg": (_encode(upright.convert("P"), "GIF"), True),
        "PNG named .jpg": (_encode(upright, "PNG"), True),
        "0-byte file": (b"", False),
        "text file named .jpg": (b"just some notes, not a photo\n" * 10, False),
        "decompression bomb (30000x30000 PNG)": (_png_bomb(), False),
        "1x1 image": (_encode(Image.new("RGB", (1, 1)), "PNG"), False),
        "CMYK JPEG": (_encode(upright.convert("CMYK"), "JPEG"), True),
        "16-bit PNG": (_encode(Image.fromarray(grey16), "PNG"), True),
        "animated GIF": (_encode(frames[0], "GIF", save_all=True, append_images=frames[1:]), True),
        "animated WebP": (
            _encode(frames[0], "WEBP", save_all=True, append_images=frames[1:]),
            True,
        ),
        "EXIF-rotated photo": (
            _encode(upright.transpose(Image.Transpose.ROTATE_90), "JPEG", exif=exif),
            True,
        ),
    }


def _zip(members: dict[str, bytes], symlinks: dict[str, str] | None = None) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, target)
    return out.getvalue()


def _classes(names: list[str], per_class: int = 3) -> dict[str, bytes]:
    photos = pet_photos(len(names) * per_class)
    return {
        f"{n}/{i}.jpg": photos[c * per_class + i]
        for c, n in enumerate(names)
        for i in range(per_class)
    }


def _csv_zip(variant: str) -> bytes:
    """Four photos per breed of csv-sample with a labels.csv: missing rows, extra column, BOM."""
    sample = DATASETS / "csv-sample"
    header, *body = list(csv.reader(io.StringIO((sample / "labels.csv").read_text())))
    rows = [r for b in sorted({r[1] for r in body}) for r in [x for x in body if x[1] == b][:4]]
    members = {f"train/{r[0]}.jpg": (sample / "train" / f"{r[0]}.jpg").read_bytes() for r in rows}
    if variant == "missing":
        rows += [[f"missing{i}", rows[0][1]] for i in range(3)]
    if variant == "extra":
        header, rows = [*header, "extra"], [[*r, "x"] for r in rows]
    text = "\n".join(",".join(r) for r in [header, *rows]) + "\n"
    members["labels.csv"] = (("\ufeff" if variant == "bom" else "") + text).encode()
    return _zip(members)


def _encrypted() -> bytes:
    """A zip whose entry is flagged encrypted (the stdlib cannot encrypt; readers check it)."""
    data = bytearray(_zip({"a/0.jpg": b"ciphertext"}))
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as archive:
        local, central = archive.infolist()[0].header_offset, archive.start_dir
    data[local + 6] |= 0x1
    data[central + 8] |= 0x1
    return bytes(data)


def bad_zips(full: bool) -> dict[str, tuple[bytes, bool]]:
    """The upload corpus: name -> (zip bytes, whether a model may be trained from it)."""
    three = _classes(["cat", "dog", "fox"])
    cases: dict[str, tuple[bytes, bool]] = {
        "path traversal (../, absolute, symlink)": (
            _zip(
                {**three, "../evil.jpg": b"x", "/tmp/evil-abs.jpg": b"x"},
                {"cat/link.jpg": "/etc/passwd"},
            ),
            True,
        ),
        "zip bomb (ratio)": (_zip({"a/bomb.jpg": b"\0" * 50 * 2**20}), False),
        "nested zip only": (_zip({"inner.zip": _zip(three)}), False),
        "encrypted zip": (_encrypted(), False),
        "empty zip": (_zip({}), False),
        "only one class": (_zip(_classes(["cat"], 5)), False),
        "a class with one image": (_zip({**three, "solo/0.jpg": pet_photos(10)[9]}), False),
        "names differing only in case": (_zip(_classes(["Cat", "cat"])), False),
    }
    if full:
        many = {f"c{i % 2}/{i}.jpg": b"x" for i in range(25_000)}
        cases |= {
            "zip bomb (many files)": (_zip(many), False),
            "unicode and emoji class names": (_zip(_classes(["café", "🐱 cat", "ñandú"])), True),
            "labels.csv naming missing files": (_csv_zip("missing"), True),
            "labels.csv with extra columns": (_csv_zip("extra"), True),
            "labels.csv with a BOM": (_csv_zip("bom"), True),
        }
    return cases


COMMANDS = {
    "unknown option": ("/retrain speed=fast", "retrain_bad_options"),
    "steps=-1": ("/retrain steps=-1", "retrain_bad_options"),
    "lr=1e9": ("/retrain lr=1e9", "retrain_bad_options"),
    "/promote of a missing version": ("/promote 999", "job_failed"),
}


def _prefix(language: str, key: str) -> str:
    from bot.i18n import pick_language, t

    return t(pick_language(language), key, reason="\0", problems="\0").split("\0")[0]


def _refusal(language: str, key: str, reply: str) -> bool:
    """Whether `reply` is the `key` refusal, its reason worded in the user's language.

    English reasons are the worker's own text; other languages must match one of the bot's
    wordings of a problem (bot/i18n.py PROBLEMS), values filled in.
    """
    from bot.i18n import PROBLEMS, pick_language

    prefix = _prefix(language, key)
    if not reply.startswith(prefix):
        return False
    templates = PROBLEMS.get(pick_language(language))
    if templates is None:
        return True
    return any(
        re.fullmatch(_pattern(tpl), reply[len(prefix) :], re.S) for tpl in templates.values()
    )


def _pattern(template: str) -> str:
    """A regular expression matching `template` whatever values fill its fields."""
    parts = string.Formatter().parse(template)
    return "".join(
        re.escape(text) + (".+?" if field is not None else "") for text, field, _, _ in parts
    )


PROGRESS_MARKS = ("⏳", "⬇", "🧮", "🏋", "📏", "💾")


def _final_reply(stack: Stack, chat_id: int, message_id: int, timeout: float) -> str:
    """The bot's last word on a user's message: its latest message in the chat since then, or
    the final edit of a status message (the bot answers in-chat without always quoting)."""
    assert stack.fake is not None

    def last() -> str:
        events = all_events(stack.fake, chat_id)
        asked = next(
            e["seq"]
            for e in events
            if e["type"] == "user" and e["message"]["message_id"] == message_id
        )
        later = [
            e["message"] for e in events if e["seq"] > asked and e["type"] in ("sent", "edited")
        ]
        texts = [m.get("text") or m.get("caption") or "" for m in later]
        final = [t for t in texts if not t.startswith(PROGRESS_MARKS) and "confusion" not in t]
        return final[-1] if final else ""

    return wait_until(last, timeout) or ""


def _row(kind: str, case: str, language: str, expected: str, seen: str, ok: bool) -> dict:
    return {
        "kind": kind,
        "case": case,
        "language": language,
        "expected": expected,
        "seen": seen.splitlines()[0] if seen else "no reply",
        "ok": ok,
    }


def bad_input(stack: Stack, full: bool, languages: tuple[str, ...] = ("en", "pt-br")) -> list[dict]:
    """Every bad image, zip and command through the real bot; one row per case and language.
    A refused input must leave the active version as it was; the worker must survive them all."""
    worker = stack.start_worker("w1")
    stack.start_bot()
    client = stack.client()
    rows = []

    def active() -> int:
        return registry.active_version(stack.models_root)

    try:
        start, user = active(), 5000
        for name, (data, answerable) in bad_images().items():
            for language in languages:
                user += 1
                sent = client.send(
                    user,
                    file=data,
                    kind="document",
                    filename="x.jpg",
                    mime_type="image/jpeg",
                    language_code=language,
                )
                reply = _final_reply(stack, user, sent["message"]["message_id"], 90)
                refused = reply.startswith(_prefix(language, "bad_image"))
                expected = "breed answer" if answerable else "clear refusal"
                rows.append(
                    _row(
                        "image",
                        name,
                        language,
                        expected,
                        reply,
                        bool(reply) and refused != answerable,
                    )
                )
        for name, (text, key) in COMMANDS.items():
            for language in languages:
                sent = client.send(ADMIN, text=text, user_id=ADMIN, language_code=language)
                reply = _final_reply(stack, ADMIN, sent["message"]["message_id"], 60)
                # Option problems are the bot's own; a failed job's reason comes from the worker.
                if key == "job_failed":
                    refused = _refusal(language, key, reply)
                else:
                    refused = reply.startswith(_prefix(language, key))
                rows.append(_row("command", name, language, "clear refusal", reply, refused))
        rows.append(
            _row(
                "model",
                "active model after images and commands",
                "",
                f"v{start}",
                f"v{active()}",
                active() == start,
            )
        )
        for i, (name, (data, trainable)) in enumerate(bad_zips(full).items()):
            language = languages[i % len(languages)]
            before = active()
            caption = "/retrain steps=20 flip=0 min_acc=1"
            reply = _final_reply(
                stack, ADMIN, send_retrain(client, data, caption, language_code=language), 300
            )
            refused = _refusal(language, "retrain_failed", reply)
            expected = "trains, or a clear refusal" if trainable else "clear refusal, model kept"
            rows.append(
                _row(
                    "zip",
                    name,
                    language,
                    expected,
                    reply,
                    (refused and active() == before) or (trainable and "✅" in reply),
                )
            )
    finally:
        client.close()
    alive = worker.alive()
    rows.append(_row("worker", "worker survives", "", "alive", "alive" if alive else "dead", alive))
    return rows
