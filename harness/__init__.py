"""The test and bench harness: start a stack of real services, wait for them, play its users.

Used by tests/ and bench/ alike (bench never imports tests). `ops/stack.py` (`make up`) is the
product's own runner; this harness starts the same processes for measurement and fault injection.
"""

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATASETS = REPO.parent / "shared" / "datasets"
