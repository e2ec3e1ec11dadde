"""The import contracts catch what they promise to: each test injects one forbidden import into a
copy of the tree and runs `lint-imports` on it, as `make lint` and CI do."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _root_packages() -> list[str]:
    """The top-level packages import-linter reads, from pyproject.toml."""
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return config["tool"]["importlinter"]["root_packages"]


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of the product packages and pyproject.toml, to inject imports into."""
    for package in _root_packages():
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("*.pyc"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def _lint(tree: Path) -> subprocess.CompletedProcess[str]:
    """`lint-imports` on the copied tree, with no cache to hide a change."""
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=tree,
        env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def _inject(tree: Path, module: str, line: str) -> None:
    """Append one import line to a module of the copied tree."""
    path = tree / module
    path.write_text(path.read_text() + f"\n{line}\n")


def test_every_package_is_read_by_the_contracts() -> None:
    """Each top-level package of ours is in root_packages, or its imports are never checked."""
    ours = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests"}
    assert ours <= set(_root_packages())


def test_the_unchanged_tree_keeps_every_contract(tree: Path) -> None:
    result = _lint(tree)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("injections", "broken"),
    [
        ([("store/datasets.py", "import tensorflow")], "The store keeps bytes and records"),
        (
            [("store/datasets.py", "import tensorflow"), ("bot/jobs.py", "import store.datasets")],
            "The bot's image never loads TensorFlow",
        ),
        ([("fakegram/api.py", "import model.data")], "The emulator is a stand-in for Telegram"),
        ([("model/runtime/litert.py", "import model.train")], "Serving without TensorFlow"),
        ([("worker/batching.py", "import bot.render")], "Processes and layers"),
    ],
    ids=["store-tensorflow", "bot-via-store", "emulator-model", "runtime-train", "worker-bot"],
)
def test_an_injected_import_breaks_its_contract(
    tree: Path, injections: list[tuple[str, str]], broken: str
) -> None:
    for module, line in injections:
        _inject(tree, module, line)
    result = _lint(tree)
    assert result.returncode != 0
    broken_lines = [line for line in result.stdout.splitlines() if line.endswith("BROKEN")]
    assert any(line.startswith(broken) for line in broken_lines), result.stdout
