"""k-fold cross-validation of the new layer on cached bottlenecks.

Every labeled photo trains the served layer, so its accuracy is estimated by cross-validation:
each fold's layer is trained on the other folds (all their views) and answers its own photos
(originals only). The number of steps is chosen on the folds' mean validation loss; the
out-of-fold answers give the accuracy, its spread over folds, the confusion matrix and the
misclassified list. Each fold costs one head training on cached vectors: well under a second.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from model import head
from model.data import LabeledImage

# (steps done, steps in all) -> None
StepsFn = Callable[[int, int], None]


def stable_folds(images: Sequence[LabeledImage], k: int) -> np.ndarray:
    """Fold index per image, stratified by class and decided by content alone.

    Within a class, photos are ordered by content hash and dealt round-robin from a start that
    depends on the class name, so every fold gets its share of each class, the folds never
    depend on file names or listing order, and re-running on the same photos gives the same folds.
    """
    by_class: dict[str, list[int]] = defaultdict(list)
    for i, image in enumerate(images):
        by_class[image.label].append(i)
    fold = np.zeros(len(images), np.int64)
    for label, rows in by_class.items():
        start = int(hashlib.sha256(label.encode()).hexdigest()[:8], 16) % k
        for rank, i in enumerate(sorted(rows, key=lambda i: images[i].sha256)):
            fold[i] = (start + rank) % k
    return fold


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of logits [N, C]."""
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@dataclass
class CrossValidation:
    """Out-of-fold answers at the chosen L2 and number of steps, and how they were chosen."""

    k: int
    best_l2: float
    best_step: int
    fold: np.ndarray  # [N] fold of each photo
    probabilities: np.ndarray  # [N, C] out-of-fold class probabilities at the chosen setting
    hits: np.ndarray  # [N] bool: the out-of-fold answer is right
    loss: dict[tuple[float, int], float]  # (l2, eval step) -> out-of-fold cross-entropy
    mirror_hits: np.ndarray | None = None  # [N] right when averaging the photo and its mirror

    @property
    def accuracy(self) -> float:
        """Pooled out-of-fold accuracy (every photo answered once, by a layer that never saw it)."""
        return float(self.hits.mean()) if len(self.hits) else 0.0

    @property
    def fold_accuracy(self) -> list[float]:
        """Accuracy on each fold (a tiny set can leave a fold empty: it is skipped)."""
        return [
            float(self.hits[self.fold == f].mean()) for f in range(self.k) if (self.fold == f).any()
        ]

    @property
    def std(self) -> float:
        """Spread of the per-fold accuracies (population standard deviation)."""
        return float(np.std(self.fold_accuracy))

    def report(self) -> dict:
        """The metrics.json entry."""
        by_l2: dict[float, float] = {}
        for (l2, _), value in self.loss.items():
            by_l2[l2] = min(by_l2.get(l2, np.inf), value)
        return {
            "k": self.k,
            "accuracy": round(self.accuracy, 5),
            "std": round(self.std, 5),
            "fold_accuracy": [round(a, 5) for a in self.fold_accuracy],
            "l2": self.best_l2,
            "best_step": self.best_step,
            "loss_by_l2": {str(l2): round(v, 5) for l2, v in by_l2.items()},
            "loss_by_step": {
                str(step): round(v, 5) for (l2, step), v in self.loss.items() if l2 == self.best_l2
            },
            "mirror_average_accuracy": (
                None if self.mirror_hits is None else round(float(self.mirror_hits.mean()), 5)
            ),
        }


def cross_validate(
    views: Sequence[np.ndarray],
    y: np.ndarray,
    fold: np.ndarray,
    n_classes: int,
    config: head.HeadConfig,
    l2_grid: Sequence[float],
    *,
    mirror: np.ndarray | None = None,
    on_steps: StepsFn | None = None,
) -> CrossValidation:
    """Train one layer per fold and L2 value, keeping its answers on the held-out fold.

    `views[0]` holds the original photos' vectors [N, D]; further views (mirrors, distorted
    copies) only add training rows. The answers are kept at every eval step up to `config.steps`;
    the chosen setting is the (L2, step) with the lowest out-of-fold cross-entropy. `mirror`
    (the mirrored photos' vectors) also measures averaging both views at answer time.
    """
    k = int(fold.max()) + 1 if len(fold) else 0
    n = len(y)
    # (l2, eval step) -> out-of-fold logits of the originals (and of the mirrors), fold by fold
    logits: dict[tuple[float, int], np.ndarray] = {}
    mirrored: dict[tuple[float, int], np.ndarray] = {}
    runs = [(l2, f) for l2 in l2_grid for f in range(k) if (fold == f).any()]
    for run, (l2, f) in enumerate(runs):
        train_rows, val_rows = np.flatnonzero(fold != f), np.flatnonzero(fold == f)

        def keep(step: int, weights: np.ndarray, l2=l2, rows=val_rows) -> None:
            for source, out in ((views[0], logits), (mirror, mirrored)):
                if source is not None:
                    z = out.setdefault((l2, step), np.zeros((n, n_classes), np.float32))
                    z[rows] = source[rows] @ weights[:-1] + weights[-1]

        head.train_head(
            np.concatenate([v[train_rows] for v in views]),
            np.tile(y[train_rows], len(views)),
            views[0][val_rows],
            y[val_rows],
            n_classes,
            dataclasses.replace(config, l2=l2, early_stopping_patience=None),
            on_eval=keep,
            on_step=(
                (lambda s, t, _acc, base=run * config.steps: on_steps(base + s, len(runs) * t))
                if on_steps
                else None
            ),
        )
    probabilities = {key: softmax(z) for key, z in logits.items()}
    loss = {
        key: float(-np.log(np.maximum(p[np.arange(n), y], 1e-12)).mean())
        for key, p in probabilities.items()
    }
    best = min(loss, key=loss.__getitem__)
    chosen = probabilities[best]
    mirror_hits = None
    if mirror is not None:
        mirror_hits = (chosen + softmax(mirrored[best])).argmax(1) == y
    return CrossValidation(
        k, best[0], best[1], fold, chosen, chosen.argmax(1) == y, loss, mirror_hits
    )
