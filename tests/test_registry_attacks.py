"""Issue 20 items 1 and 9 through the real interfaces: records and pointers written into a real
Redis by someone else, and retrain jobs pushed into the queue naming their own backbone, against
a real worker serving a retrained version. Each attack is refused or won back, nothing is
written outside MODELS_DIR, and the worker keeps serving. `make reliability` runs the same
attacks (bench/reliability.py, the "registry" rows)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.registry_attacks import registry_attacks
from harness.stack import Stack

pytestmark = [pytest.mark.slow, pytest.mark.reliability]


@pytest.fixture
def stack(tmp_path: Path, breedbot_home: Path) -> Iterator[Stack]:
    """A fresh stack (emulator, password-protected Redis); services stop after."""
    with Stack(tmp_path).running(BREEDBOT_HOME=str(breedbot_home)) as running:
        yield running


def test_forged_records_pointers_and_queued_backbones_are_refused(stack: Stack) -> None:
    rows = registry_attacks(stack)
    assert len(rows) == 6
    assert [row for row in rows if row["held"] != row["tried"]] == [], rows
