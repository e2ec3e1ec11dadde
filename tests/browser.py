"""The Chromium the browser test drives: optional on a developer's machine, required in CI."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
INSTALL_HINT = "apt-get install chromium"


def in_ci(env: Mapping[str, str]) -> bool:
    """True where the CI convention `CI=true` (or 1) is set."""
    return env.get("CI", "").strip().lower() in {"true", "1", "yes"}


def chromium_or_skip(path: Path = CHROMIUM, env: Mapping[str, str] | None = None) -> Path:
    """`path` if it exists; else skip the test (fail it in CI, where the browser test must run)."""
    if path.is_file():
        return path
    message = f"{path} not found; run `{INSTALL_HINT}` to run the playground browser test"
    if in_ci(os.environ if env is None else env):
        pytest.fail(f"CI=true: {message}")
    pytest.skip(message)
