"""What one `breedbot label-image` / `eval` call costs: CPU seconds and peak RSS of the process.

Each call runs as its own `python -m ops.cli` child, as a user runs it, and its rusage comes
from os.wait4. `--before REPO` measures the same calls against another checkout (say main
before a change) so the two are taken side by side on the same machine and load. The version
served is a LiteRT-served retrain of flowers-dev (`--graph`, or one retrained here first).

Prints JSON, writes bench/results/cli_bench.json and the `cli_bench` section of
docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import DATASETS, emit, machine
from harness import REPO

RESULTS = Path(__file__).resolve().parent / "results" / "cli_bench.json"
GOAL = {"cpu_s": 1.5, "max_rss_mb": 250}


def _run(repo: Path, argv: list[str]) -> dict[str, float]:
    """One CLI call in a fresh interpreter against `repo`: its CPU seconds and peak RSS."""
    env = {**os.environ, "PYTHONPATH": str(repo)}
    child = subprocess.Popen(
        [sys.executable, "-m", "ops.cli", *argv], cwd=repo, env=env, stdout=subprocess.DEVNULL
    )
    _, status, usage = os.wait4(child.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{argv[0]} failed in {repo}")
    return {"cpu_s": usage.ru_utime + usage.ru_stime, "max_rss_mb": usage.ru_maxrss / 1024}


def _calls(graph: Path) -> dict[str, list[str]]:
    """The calls measured: one photo through a version and the zero-shot model, one eval."""
    photo = str(sorted((DATASETS / "pets-dev" / "pug").glob("*.jpg"))[0])
    return {
        "label-image --graph": ["label-image", "--graph", str(graph), "--image", photo],
        "label-image (zero-shot)": ["label-image", "--image", photo],
        "eval --graph (200 photos)": [
            *("eval", "--graph", str(graph), "--image_dir", str(DATASETS / "flowers-dev")),
        ],
    }


def measure(repo: Path, graph: Path, repeats: int) -> dict[str, dict[str, float]]:
    """Median CPU seconds and the largest peak RSS of each call over `repeats` runs."""
    out = {}
    for name, argv in _calls(graph).items():
        runs = [_run(repo, argv) for _ in range(repeats)]
        out[name] = {
            "cpu_s": round(statistics.median(r["cpu_s"] for r in runs), 2),
            "max_rss_mb": round(max(r["max_rss_mb"] for r in runs), 1),
        }
    return out


def _retrain(into: Path) -> Path:
    """A LiteRT-served flowers-dev version to label with (the retrain itself is not measured)."""
    argv = ["retrain", "--image_dir", str(DATASETS / "flowers-dev"), "--output_graph", str(into)]
    argv += ["--architecture", "efficientnet_lite0"]
    subprocess.run([sys.executable, "-m", "ops.cli", *argv], cwd=REPO, check=True)
    return into


def _markdown(result: dict) -> str:
    rows = ["| call | before CPU s | before max RSS MB | after CPU s | after max RSS MB |"]
    rows.append("|---|---|---|---|---|")
    before = result.get("before", {})
    for name, after in result["after"].items():
        was = before.get(name, {"cpu_s": "–", "max_rss_mb": "–"})
        rows.append(
            f"| `{name}` | {was['cpu_s']} | {was['max_rss_mb']} | "
            f"{after['cpu_s']} | {after['max_rss_mb']} |"
        )
    return (
        "## A CLI call costs what serving costs (issue 25)\n\n"
        f"One `python -m ops.cli` child per call, rusage from wait4; median of "
        f"{result['repeats']} runs (peak RSS: the largest). Goal per call on a LiteRT-served "
        f"version: ≤ {GOAL['cpu_s']} CPU s and ≤ {GOAL['max_rss_mb']} MB. Before: "
        "`model/cli.py` took BREEDBOT_HOME's default from `model.backbones`, which imports "
        "TensorFlow. Load average "
        f"{result['load_average']['before']} → {result['load_average']['after']}; "
        f"{result['machine']}.\n\n" + "\n".join(rows)
    )


def main() -> None:
    """Measure, print JSON, update the results file and docs/BENCHMARKS.md."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--graph", type=Path, help="a LiteRT-served version folder (default: retrain)")
    p.add_argument("--before", type=Path, help="another checkout to measure the same calls in")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        graph = args.graph or _retrain(Path(tmp) / "flowers")
        load_before = round(os.getloadavg()[0], 2)
        result: dict = {"machine": machine(), "repeats": args.repeats, "goal": GOAL}
        if args.before:
            result["before"] = measure(args.before.resolve(), graph, args.repeats)
        result["after"] = measure(REPO, graph, args.repeats)
        result["load_average"] = {"before": load_before, "after": round(os.getloadavg()[0], 2)}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n", "utf-8")
    emit("cli_bench", result, _markdown(result))


if __name__ == "__main__":
    main()
