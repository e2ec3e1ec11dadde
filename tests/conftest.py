"""Shared test fixtures: the real photo datasets beside the repo."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATASETS = REPO.parent / "shared" / "datasets"


@pytest.fixture(scope="session")
def datasets() -> Path:
    """Root of ../shared/datasets (pets-dev, flowers-dev, csv-sample)."""
    if not DATASETS.is_dir():
        pytest.fail(f"shared datasets not found at {DATASETS}")
    return DATASETS
