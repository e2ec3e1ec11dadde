"""The new softmax layer on real flowers-dev bottlenecks: its gradient, early stopping, weights."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from model import backbones, crossval, data, features, head, train
from model.hparams import HParams

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def flowers(datasets: Path, breedbot_home: Path) -> tuple[np.ndarray, np.ndarray]:
    """Bottlenecks and labels of every flowers-dev photo."""
    backbone = backbones.load_backbone(backbones.DEFAULT_BACKBONE, breedbot_home)
    dataset = data.load_dataset(datasets / "flowers-dev")
    views = [[features.ORIGINAL]] * len(dataset.images)
    ex = train.bottlenecks(backbone, dataset.images, views, breedbot_home / "bottlenecks")
    index = {label: i for i, label in enumerate(dataset.classes)}
    return ex.vectors[features.ORIGINAL.key()], np.array([index[im.label] for im in dataset.images])


def test_gradient_matches_tensorflow_autodiff(flowers: tuple[np.ndarray, np.ndarray]) -> None:
    """The written-out gradient of the weighted, label-smoothed loss is autodiff's."""
    x, y = flowers
    rng = np.random.default_rng(0)
    rows = rng.choice(len(y), 40, replace=False)
    xb, yb = head._with_bias_column(x[rows]), y[rows]
    weights = rng.normal(0, 0.05, (xb.shape[1], 5)).astype(np.float32)
    sample_w = rng.uniform(0.5, 2.0, len(rows)).astype(np.float32)
    targets = (np.eye(5) * 0.9 + 0.1 / 5).astype(np.float32)  # label smoothing 0.1
    loss, accuracy, grad_logits = head._loss_and_logit_grad(weights, xb, yb, sample_w, targets)
    variable = tf.Variable(weights)
    with tf.GradientTape() as tape:
        logits = tf.matmul(xb, variable)
        ce = tf.nn.softmax_cross_entropy_with_logits(tf.gather(targets, yb), logits)
        expected = tf.reduce_sum(ce * sample_w) / tf.reduce_sum(sample_w)
    np.testing.assert_allclose(loss, expected.numpy(), rtol=1e-5)
    np.testing.assert_allclose(xb.T @ grad_logits, tape.gradient(expected, variable), atol=1e-6)
    assert accuracy == np.mean((xb @ weights).argmax(1) == yb)


def test_early_stopping_returns_the_best_validation_weights(
    flowers: tuple[np.ndarray, np.ndarray],
) -> None:
    x, y = flowers
    fit, val = np.arange(len(y)) % 4 != 0, np.arange(len(y)) % 4 == 0
    hp = HParams(
        how_many_training_steps=5000,
        learning_rate=0.05,
        eval_step_interval=50,
        early_stopping=True,
        early_stopping_patience=2,
        l2=3e-4,
    )
    trained = head.train_head(x[fit], y[fit], x[val], y[val], 5, train.head_config(hp))
    losses = trained.history["val_loss"]
    best = int(np.argmin(losses))
    assert len(losses) == best + 1 + 2 < 5000 // 50  # stopped two intervals after the best
    assert trained.best_step == (best + 1) * 50
    accuracy = float((trained.probabilities(x[val]).argmax(1) == y[val]).mean())
    assert accuracy == trained.history["val_accuracy"][best]


def test_class_weighting_favours_a_rare_class(flowers: tuple[np.ndarray, np.ndarray]) -> None:
    """Four daisies against forty of every other flower: weighted, daisies get more of the mass.

    A strong L2 keeps the layer from memorising the four, so the class prior shows (about 2x
    the mass over seeds 0-2).
    """
    x, y = flowers
    keep = (y != 0) | (np.cumsum(y == 0) <= 4)
    assert np.sum(y[keep] == 0) == 4

    def daisy_mass(weighting: bool) -> float:
        hp = HParams(how_many_training_steps=300, class_weighting=weighting, l2=0.1)
        # No validation split: the training curve stands in for it.
        trained = head.train_head(x[keep], y[keep], x[:0], y[:0], 5, train.head_config(hp))
        return float(trained.probabilities(x)[:, 0].mean())

    assert daisy_mass(True) > 1.5 * daisy_mass(False)


def test_cross_validation_answers_each_photo_out_of_fold(
    flowers: tuple[np.ndarray, np.ndarray],
) -> None:
    """Each photo is answered by a layer trained without its fold, at the chosen L2 and step."""
    x, y = flowers
    fold = np.arange(len(y)) % 4
    config = train.head_config(HParams(how_many_training_steps=200, eval_step_interval=50))
    cv = crossval.cross_validate([x, x[:, ::-1]], y, fold, 5, config, (1e-3, 1e-1), mirror=x)
    assert set(cv.loss) == {(l2, s) for l2 in (1e-3, 1e-1) for s in (50, 100, 150, 200)}
    assert (cv.best_l2, cv.best_step) == min(cv.loss, key=cv.loss.__getitem__)
    rows = fold == 0
    alone = head.train_head(
        np.concatenate([x[~rows], x[~rows][:, ::-1]]),
        np.tile(y[~rows], 2),
        x[rows],
        y[rows],
        5,
        replace(config, l2=cv.best_l2, steps=cv.best_step),
    )
    np.testing.assert_allclose(cv.probabilities[rows], alone.probabilities(x[rows]), atol=1e-5)
    assert cv.accuracy == pytest.approx(np.mean(cv.probabilities.argmax(1) == y))
    assert len(cv.fold_accuracy) == 4 and cv.std == pytest.approx(np.std(cv.fold_accuracy))
    assert cv.accuracy > 0.8
    # "Mirrors" identical to the originals: averaging both views changes nothing.
    np.testing.assert_array_equal(cv.mirror_hits, cv.hits)
