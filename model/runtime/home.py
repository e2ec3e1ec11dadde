"""BREEDBOT_HOME: the per-user cache of backbone exports, conversions and bottlenecks."""

from __future__ import annotations

import os
from pathlib import Path


def default_home() -> Path:
    """The per-user cache directory for exported backbones ($XDG_CACHE_HOME/breedbot)."""
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "breedbot"
