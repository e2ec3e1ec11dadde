"""`--architecture auto` scores its candidates on a class-stratified sample of the real photos."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

from model import data, train


def test_auto_sample_caps_each_class_and_ignores_order(datasets: Path) -> None:
    """At most 24 photos per class, every photo of a smaller class, and the same photos
    (chosen by content) however the list is ordered."""
    items = data.load_dataset(datasets / "pets-dev").images
    rows = train.stratified_sample(items, train.AUTO_SAMPLE_PER_CLASS)
    sampled = Counter(items[i].label for i in rows)
    total = Counter(item.label for item in items)
    assert sampled == {label: min(n, 24) for label, n in total.items()}
    assert max(total.values()) > 24  # the cap is exercised, not vacuous

    shuffled = items[:]
    random.Random(7).shuffle(shuffled)
    again = train.stratified_sample(shuffled, train.AUTO_SAMPLE_PER_CLASS)
    assert {shuffled[i].sha256 for i in again} == {items[i].sha256 for i in rows}
    assert list(again) == sorted(again)
