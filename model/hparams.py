"""Retrain hyperparameters: retrain.py's flag names and meanings, plus breedbot's additions.

Kept free of TensorFlow so that the CLI can parse its flags without loading it.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_BACKBONE = "efficientnet_lite0"  # the zero-shot model's, and any single-backbone default
# `--architecture auto`: these backbones, fastest first, compete by cross-validated accuracy.
AUTO = "auto"
AUTO_CANDIDATES = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
# L2 values cross-validation chooses from unless --l2 is given; the probe in
# bench/retrain_bench.py (logistic regression, C=1) regularises about as strongly as 1e-3.
L2_GRID = (3e-4, 1e-3, 3e-3)


@dataclass
class HParams:
    """Everything `retrain()` can be told; the CLI maps its flags one to one onto these fields."""

    how_many_training_steps: int = 1000
    learning_rate: float = 0.01
    # None: no photo is held out; the accuracy comes from k-fold cross-validation. A number
    # holds out that share as a content-hashed test split, which is then reported and gated on.
    testing_percentage: float | None = None
    validation_percentage: float = 10.0  # accepted; the folds stand in for a validation split
    cv_folds: int = 5
    eval_step_interval: int = 50
    train_batch_size: int = 100
    test_batch_size: int = -1  # evaluation always covers the whole split; kept for retrain.py users
    validation_batch_size: int = -1
    print_misclassified_test_images: bool = False
    tfhub_module: str = AUTO  # chosen from docs/BENCHMARKS.md's retrain table
    flip_left_right: bool = True
    random_crop: int = 0
    random_scale: int = 0
    random_brightness: int = 0
    distortion_copies: int = 2  # cached distorted copies per training image when distorting
    # Defaults below were chosen by 5-fold CV on flowers-dev and pets-dev (bench/retrain_bench.py):
    # with validation splits this small, early stopping and class weights cost accuracy.
    early_stopping: bool = False
    early_stopping_patience: int = 6  # eval intervals without a better validation loss
    class_weighting: bool = False
    l2: float | None = None  # None: chosen from L2_GRID by cross-validation
    label_smoothing: float = 0.0
    seed: int = 0
    assert_accuracy_at_least: float | None = None
    min_images_per_class: int = 3
    extraction_batch_size: int = 32


def validate(hparams: HParams) -> None:
    """Reject out-of-range values with a message naming the flag."""
    hp = hparams
    gate = hp.assert_accuracy_at_least
    test_pct = hp.testing_percentage or 0.0
    checks = [
        (1 <= hp.how_many_training_steps <= 100_000, "how_many_training_steps must be 1..100000"),
        (0 < hp.learning_rate <= 1.0, "learning_rate must be in (0, 1]"),
        (0 <= test_pct < 100, "testing_percentage must be in [0, 100)"),
        (0 <= hp.validation_percentage < 100, "validation_percentage must be in [0, 100)"),
        (
            test_pct + hp.validation_percentage < 100,
            "testing_percentage + validation_percentage must be below 100",
        ),
        (2 <= hp.cv_folds <= 20, "cv_folds must be 2..20"),
        (hp.eval_step_interval >= 1, "eval_step_interval must be >= 1"),
        (1 <= hp.train_batch_size <= 100_000, "train_batch_size must be 1..100000"),
        (0 <= hp.random_crop <= 100, "random_crop must be in [0, 100]"),
        (0 <= hp.random_scale <= 100, "random_scale must be in [0, 100]"),
        (0 <= hp.random_brightness <= 100, "random_brightness must be in [0, 100]"),
        (0 <= hp.distortion_copies <= 20, "distortion_copies must be in [0, 20]"),
        (hp.early_stopping_patience >= 1, "early_stopping_patience must be >= 1"),
        (hp.l2 is None or 0 <= hp.l2 <= 1, "l2 must be in [0, 1]"),
        (0 <= hp.label_smoothing < 1, "label_smoothing must be in [0, 1)"),
        (hp.min_images_per_class >= 2, "min_images_per_class must be >= 2"),
        (1 <= hp.extraction_batch_size <= 1024, "extraction_batch_size must be 1..1024"),
        (gate is None or 0 <= gate <= 1, "assert_accuracy_at_least must be in [0, 1]"),
    ]
    for ok, message in checks:
        if not ok:
            raise ValueError(message)
