"""Helpers shared by the bench scripts: JSON output and the docs/BENCHMARKS.md sections."""

from __future__ import annotations

import json
import platform
import resource
import statistics
from pathlib import Path

from harness import DATASETS as DATASETS  # the benches take the harness's paths from here
from harness import REPO

BENCHMARKS_MD = REPO / "docs" / "BENCHMARKS.md"


def peak_rss_mb() -> float:
    """Peak resident set size of this process, in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def percentiles(values: list[float]) -> dict[str, float]:
    """p50/p95/p99 of latencies in ms, and how many there were."""
    cuts = statistics.quantiles(values, n=100)
    return {
        "p50_ms": round(cuts[49], 1),
        "p95_ms": round(cuts[94], 1),
        "p99_ms": round(cuts[98], 1),
        "n": len(values),
    }


def machine() -> str:
    """One line about where the numbers were taken."""
    import os

    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def forget_earlier_retrains(home: Path, backbone_identity: str) -> None:
    """Drop what earlier retrains left in BREEDBOT_HOME (int8 sets, SavedModel templates), so
    the next retrain is cold; the backbone's own float conversions stay."""
    from model import litert, serving

    litert.prune_int8(home, backbone_identity, keep=0)
    serving.prune_templates(home, keep=0)


def update_section(name: str, markdown: str, path: Path = BENCHMARKS_MD) -> None:
    """Replace (or append) the block between `<!-- name:start -->` and `<!-- name:end -->`."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = path.read_text("utf-8") if path.exists() else "# Benchmarks\n"
    block = f"{start}\n{markdown.rstrip()}\n{end}"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, "utf-8")


def emit(name: str, result: dict, markdown: str) -> None:
    """Print the JSON result and record it in docs/BENCHMARKS.md."""
    print(json.dumps(result, indent=2))
    update_section(name, markdown + "\n\n```json\n" + json.dumps(result, indent=2) + "\n```")
