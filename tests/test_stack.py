"""`breedbot up`'s console: errors and URLs on screen, each service's chatter in its log file."""

from __future__ import annotations

import stat
from pathlib import Path

from ops import stack
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


def test_info_file_keeps_urls_and_password_for_this_user_only(tmp_path: Path, capsys) -> None:
    settings = WorkerSettings(var_dir=tmp_path / "var", flower_port=5599)
    assert stack.print_info(settings) == 1
    assert "no stack is running" in capsys.readouterr().out
    page = stack.Service("playground", [], url="http://127.0.0.1:8081/")
    lines = stack.info_lines(settings, "admin:pa:ss", [page])
    path = settings.var_dir / stack.INFO_FILE
    stack.write_info(path, lines)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stack.print_info(settings) == 0
    assert capsys.readouterr().out.splitlines() == [
        "Flower: http://127.0.0.1:5599 user admin, password pa:ss",
        "playground: open http://127.0.0.1:8081/",
        f"logs: {settings.var_dir / 'log'}/",
    ]
    hidden = stack.info_lines(settings, "admin:pa:ss", [], show_password=False)
    assert "pa:ss" not in hidden[0]
