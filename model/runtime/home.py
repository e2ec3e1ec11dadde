"""BREEDBOT_HOME: the per-user cache of backbone exports, conversions and bottlenecks."""

from __future__ import annotations

import os
import re
from pathlib import Path


def default_home() -> Path:
    """The per-user cache directory for exported backbones ($XDG_CACHE_HOME/breedbot)."""
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "breedbot"


def folder_name(identity: str) -> str:
    """A backbone identity as a safe folder-name stem for what BREEDBOT_HOME keeps per backbone."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", identity).strip("._")[-120:]
