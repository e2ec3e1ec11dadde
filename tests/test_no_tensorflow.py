"""Guards: each process's import closure holds only what that process needs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("tensorflow", "tf_keras", "tensorflow_hub", "keras")
TELEGRAM = ("telegram", "httpx", "bot")


def _loaded(setup: str, roots: tuple[str, ...]) -> list[str]:
    """Run `setup` in a fresh interpreter; the loaded modules whose top package is in `roots`."""
    listing = f"print(sorted(m for m in sys.modules if m.split('.')[0] in {roots!r}))"
    code = f"import sys\n{setup}\n{listing}"
    # The apps read their broker URL when configured; nothing here connects to it.
    env = {**os.environ, "REDIS_URL": "redis://127.0.0.1:1/0"}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, check=True
    )
    return eval(result.stdout.strip())  # a printed list of module names


def test_importing_the_bot_leaves_tensorflow_out() -> None:
    """The bot, its reply sender and the playground: build the app, load every reply task."""
    setup = (
        "import bot.app, bot.replies, ops.playground\n"
        "from pydantic import SecretStr\n"
        "from bot.settings import BotSettings\n"
        "bot.app.build_app(BotSettings(telegram_bot_token=SecretStr('1:x')))\n"
    )
    assert _loaded(setup, HEAVY) == []


def test_the_cli_finds_its_home_without_tensorflow() -> None:
    """`breedbot` parses its arguments and finds BREEDBOT_HOME: no TensorFlow before a command
    that needs it (label-image of a LiteRT-served version never does)."""
    setup = "import ops.cli, model.cli\nmodel.cli.home_dir()\nops.cli.build_parser()\n"
    assert _loaded(setup, HEAVY) == []


def test_flower_loads_no_task_module() -> None:
    """Flower is a Celery client: its app includes nothing that reaches a model or Telegram."""
    setup = "import broker.flower\nbroker.flower.app.loader.import_default_modules()\n"
    assert _loaded(setup, (*HEAVY, *TELEGRAM, "model", "worker")) == []


def test_the_worker_never_loads_telegram() -> None:
    """Every worker task module loaded: no Telegram client, no HTTP client, nothing of the bot."""
    setup = "import worker.celery_app as w\nw.app.loader.import_default_modules()\n"
    assert _loaded(setup, TELEGRAM) == []


@pytest.mark.slow
def test_a_cpu_worker_answers_a_photo_without_tensorflow(
    breedbot_home: Path, datasets: Path
) -> None:
    """Every worker task module, the zero-shot model converted (in a child process) and served
    through LiteRT, one real photo answered: TensorFlow never enters the worker's process."""
    photo = sorted((datasets / "pets-dev" / "pug").glob("*.jpg"))[0]
    setup = (
        "import worker.celery_app as w\n"
        "w.app.loader.import_default_modules()\n"
        "from pathlib import Path\n"
        "from worker import serving\n"
        "from model.predict import load_classifier\n"
        f"home = Path({str(breedbot_home)!r})\n"
        "serving.prepare_zero_shot(home, 'litert')\n"
        "classifier = load_classifier(home=home, engine='litert')\n"
        f"best = classifier.predict([Path({str(photo)!r}).read_bytes()])[0].top_k[0]\n"
        "assert best.label == 'pug', best\n"
    )
    assert _loaded(setup, HEAVY) == []
