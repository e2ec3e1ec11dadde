"""Fit a version's honesty on its own training photos: each class's species, a temperature, and
the evidence threshold below which a photo is "not one of my breeds".

The temperature is fit on the out-of-fold answers of the cross-validation. The threshold is
chosen from two cross-validations: the photo folds say how many right answers a threshold
would lose, and folds of whole classes (each left out of a layer trained on the others) say how
many photos of a breed the version never saw it would still claim.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from model import crossval, head
from model.runtime import imagenet, openset

# Right out-of-fold answers a chosen threshold may turn into "not one of my breeds" (the goal
# allows a 2-point drop in accuracy; the rest is margin for photos unlike the training ones).
MAX_LOSS = 0.015
# Among thresholds within MAX_LOSS, the lowest whose claims on left-out breeds are within this
# of the fewest: refusing more right answers for next to no honesty is a bad trade.
CLAIMS_SLACK = 0.02
CLASS_FOLDS = 5
ECE_BINS = 15


def expected_calibration_error(confidence: np.ndarray, hits: np.ndarray) -> float:
    """ECE: the photo-weighted gap between confidence and accuracy over equal-width bins."""
    confidence, hits = np.asarray(confidence, np.float64), np.asarray(hits, np.float64)
    if not len(confidence):
        return 0.0
    bins = np.minimum((confidence * ECE_BINS).astype(int), ECE_BINS - 1)
    gap = 0.0
    for b in np.unique(bins):
        inside = bins == b
        gap += inside.sum() * abs(confidence[inside].mean() - hits[inside].mean())
    return float(gap / len(confidence))


def fit_temperature(probabilities: np.ndarray, y: np.ndarray) -> float:
    """The temperature with the lowest out-of-fold cross-entropy (a log grid, then refined)."""
    rows = np.arange(len(y))

    def loss(t: float) -> float:
        return float(-np.log(openset.calibrated(probabilities, t)[rows, y] + 1e-12).mean())

    grid = np.exp(np.linspace(np.log(0.1), np.log(10.0), 41))
    best = float(grid[int(np.argmin([loss(t) for t in grid]))])
    fine = best * np.exp(np.linspace(-0.12, 0.12, 25))
    return float(fine[int(np.argmin([loss(t) for t in fine]))])


def class_species(
    imagenet_probabilities: np.ndarray | None, y: np.ndarray, n_classes: int
) -> list[str | None]:
    """Each class's species: the majority of ImageNet's view of its photos; None for a class
    whose photos ImageNet mostly sees as no cat or dog (a version trained on flowers)."""
    if imagenet_probabilities is None:
        return [None] * n_classes
    species = np.array(openset.species_of(imagenet_probabilities))
    pet = imagenet_probabilities[:, list(imagenet.CARNIVORE_CLASS_IDS)].sum(axis=1) >= 0.5
    out: list[str | None] = []
    for c in range(n_classes):
        rows = y == c
        if not rows.any() or pet[rows].mean() < 0.5:
            out.append(None)
            continue
        cats = (species[rows & pet] == openset.CAT).mean()
        out.append(openset.CAT if cats > 0.5 else openset.DOG)
    return out


def _means(x: np.ndarray, y: np.ndarray, n_classes: int) -> np.ndarray:
    """Each class's mean row (zeros for a class with no photo here)."""
    out = np.zeros((n_classes, x.shape[1]))
    for c in np.unique(y):
        out[c] = x[y == c].mean(axis=0)
    return out


def centroids(x: np.ndarray, y: np.ndarray, n_classes: int) -> np.ndarray:
    """Each class's unit mean direction of its unit bottlenecks [C, D]."""
    return openset.unit(_means(openset.unit(x), y, n_classes))


def profiles(inet: np.ndarray | None, y: np.ndarray, n_classes: int) -> np.ndarray | None:
    """Each class's mean ImageNet pet profile [C, 123]; None without ImageNet's view."""
    return None if inet is None else _means(openset.pet_profile(inet), y, n_classes)


def _scores(
    probabilities: np.ndarray,
    x: np.ndarray,
    inet: np.ndarray | None,
    model: openset.OpenSet,
) -> tuple[np.ndarray, np.ndarray]:
    """(best class or -1, its evidence) for each photo, as `openset.decide` weighs them."""
    best, score = np.full(len(x), -1), np.full(len(x), -1.0)
    for i in range(len(x)):
        ev = openset.Evidence(
            probabilities[i], None if inet is None else inet[i], x[i], True, False, 1.0
        )
        _, classes, _, score[i] = openset.best_evidence(ev, model)
        if len(classes):
            best[i] = classes[0]
    return best, score


@dataclass
class Inputs:
    """What the fit reads: the training photos' bottlenecks (originals, then every view) and
    labels, ImageNet's view of them, the photo folds and the cross-validated answers."""

    views: Sequence[np.ndarray]
    y: np.ndarray
    imagenet: np.ndarray | None
    cv: crossval.CrossValidation
    labels: Sequence[str]
    config: head.HeadConfig


def fold_model(
    data: Inputs, species: list[str | None], t: float, fit: np.ndarray
) -> openset.OpenSet:
    """The OpenSet of a fold's layer: centroids and profiles of the photos it trained on."""
    x, y, n = data.views[0][fit], data.y[fit], len(data.labels)
    inet = None if data.imagenet is None else data.imagenet[fit]
    return openset.OpenSet(species, t, 0.0, centroids(x, y, n), profiles(inet, y, n))


def _in_set(data: Inputs, species: list[str | None], t: float) -> tuple[np.ndarray, np.ndarray]:
    """Evidence and rightness of every photo's out-of-fold answer (fold-wise centroids)."""
    x, y = data.views[0], data.y
    score, right = np.zeros(len(y)), np.zeros(len(y), bool)
    for f in np.unique(data.cv.fold):
        fit, held = data.cv.fold != f, data.cv.fold == f
        model = fold_model(data, species, t, fit)
        inet = None if data.imagenet is None else data.imagenet[held]
        best, score[held] = _scores(data.cv.probabilities[held], x[held], inet, model)
        right[held] = best == y[held]
    return score, right


def _class_groups(labels: Sequence[str]) -> np.ndarray:
    """A group per class, by a hash of its name, so the same classes are left out together."""
    k = min(CLASS_FOLDS, len(labels))
    order = sorted(range(len(labels)), key=lambda c: hashlib.sha256(labels[c].encode()).hexdigest())
    group = np.zeros(len(labels), np.int64)
    for rank, c in enumerate(order):
        group[c] = rank % k
    return group


def _left_out(data: Inputs, species: list[str | None], t: float) -> np.ndarray:
    """Evidence for each photo of a class left out of the layer (-1: no class of its species)."""
    x, y = data.views[0], data.y
    group = _class_groups(data.labels)
    score = np.full(len(y), -1.0)
    for g in np.unique(group):
        kept = np.flatnonzero(group != g)
        if not len(kept):
            continue
        remap = {c: i for i, c in enumerate(kept)}
        fit = np.isin(y, kept)
        yk = np.array([remap[c] for c in y[fit]])
        layer = head.train_head(
            np.concatenate([v[fit] for v in data.views]),
            np.tile(yk, len(data.views)),
            x[:0],
            yk[:0],
            len(kept),
            data.config,
        )
        inet = None if data.imagenet is None else data.imagenet
        model = openset.OpenSet(
            [species[c] for c in kept],
            t,
            0.0,
            centroids(x[fit], yk, len(kept)),
            profiles(None if inet is None else inet[fit], yk, len(kept)),
        )
        out = ~fit
        _, score[out] = _scores(
            layer.probabilities(x[out]), x[out], None if inet is None else inet[out], model
        )
    return score


def choose_threshold(
    in_scores: np.ndarray, in_right: np.ndarray, out_scores: np.ndarray
) -> tuple[float, float, float]:
    """(threshold, share of photos whose right answer it refuses, share of left-out breeds'
    photos it still claims)."""
    n = max(len(in_scores), 1)
    right = np.sort(in_scores[in_right])
    candidates = np.concatenate([[0.0], right])
    loss = np.array([(right < t).sum() / n for t in candidates])
    claims = np.array([(out_scores >= t).mean() if len(out_scores) else 0.0 for t in candidates])
    feasible = loss <= MAX_LOSS
    fewest = claims[feasible].min()
    chosen = int(np.flatnonzero(feasible & (claims <= fewest + CLAIMS_SLACK))[0])
    return float(candidates[chosen]), float(loss[chosen]), float(claims[chosen])


def fit(data: Inputs, threshold: float | None) -> tuple[openset.OpenSet, dict]:
    """The version's OpenSet and its metrics.json entry; `threshold` None: chosen by CV."""
    n = len(data.labels)
    species = class_species(data.imagenet, data.y, n)
    t = fit_temperature(data.cv.probabilities, data.y)
    in_scores, in_right = _in_set(data, species, t)
    out_scores = _left_out(data, species, t) if n > 1 else np.zeros(0)
    chosen, loss, claims = choose_threshold(in_scores, in_right, out_scores)
    given = threshold is not None
    if given:
        chosen = float(threshold)
        loss = float((in_right & (in_scores < chosen)).sum() / max(len(in_scores), 1))
        claims = float((out_scores >= chosen).mean()) if len(out_scores) else 0.0
    model = openset.OpenSet(
        species,
        t,
        chosen,
        centroids(data.views[0], data.y, n),
        profiles(data.imagenet, data.y, n),
    )
    confidence = data.cv.probabilities.max(axis=1)
    hits = data.cv.probabilities.argmax(axis=1) == data.y
    calibrated = openset.calibrated(data.cv.probabilities, t)
    accepted = in_right & (in_scores >= chosen)
    report = {
        "species": species,
        "temperature": round(t, 5),
        "threshold": round(chosen, 5),
        "threshold_source": "given" if given else "cross_validation",
        "ece_before": round(expected_calibration_error(confidence, hits), 5),
        "ece_after": round(
            expected_calibration_error(calibrated.max(axis=1), calibrated.argmax(axis=1) == data.y),
            5,
        ),
        "in_set_accuracy": round(float(in_right.mean()), 5),
        "in_set_accuracy_answered": round(float(accepted.mean()), 5),
        "right_refused": round(loss, 5),
        "left_out_claimed": round(claims, 5),
        "left_out_photos": len(out_scores),
        "class_folds": int(min(CLASS_FOLDS, n)),
    }
    return model, report
