"""Guard: the bot process never imports TensorFlow (or Keras, or TF Hub)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("tensorflow", "tf_keras", "tensorflow_hub", "keras")


def test_importing_the_bot_leaves_tensorflow_out() -> None:
    """Import bot.app and ops.playground, build the app, and list the heavy modules loaded."""
    code = (
        "import sys\n"
        "import bot.app, ops.playground\n"
        "from pydantic import SecretStr\n"
        "from bot.settings import BotSettings\n"
        "bot.app.build_app(BotSettings(telegram_bot_token=SecretStr('1:x')))\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
