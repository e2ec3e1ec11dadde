"""BREEDBOT_HOME: the per-user cache of backbone exports, conversions and bottlenecks."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path


def default_home() -> Path:
    """The per-user cache directory for exported backbones ($XDG_CACHE_HOME/breedbot)."""
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "breedbot"


def folder_name(identity: str) -> str:
    """A backbone identity as a safe folder-name stem for what BREEDBOT_HOME keeps per backbone."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", identity).strip("._")[-120:]


def place(source: Path, target: Path) -> Path:
    """Put a BREEDBOT_HOME file into a version folder: a hard link, or a copy across devices."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)
    return target
