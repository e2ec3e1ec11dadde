"""Retrain hyperparameters: retrain.py's flag names and meanings, plus breedbot's additions.

Kept free of TensorFlow so that the CLI can parse its flags without loading it. Names, types,
ranges and help texts live in `contract/options.py`, shared with the bot.
"""

from __future__ import annotations

from dataclasses import dataclass

from contract import options

DEFAULT_BACKBONE = "efficientnet_lite0"


@dataclass
class HParams:
    """Everything `retrain()` can be told; the CLI maps its flags one to one onto these fields."""

    how_many_training_steps: int = 1000
    learning_rate: float = 0.01
    testing_percentage: float = 10.0
    validation_percentage: float = 10.0
    eval_step_interval: int = 50
    train_batch_size: int = 100
    test_batch_size: int = -1  # evaluation always covers the whole split; kept for retrain.py users
    validation_batch_size: int = -1
    print_misclassified_test_images: bool = False
    tfhub_module: str = DEFAULT_BACKBONE
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
    l2: float = 3e-4
    label_smoothing: float = 0.0
    seed: int = 0
    assert_accuracy_at_least: float | None = None
    min_images_per_class: int = 3
    extraction_batch_size: int = 32


def validate(hparams: HParams) -> None:
    """Reject out-of-range values (an `OptionError`, a ValueError naming each flag)."""
    options.check({option.name: getattr(hparams, option.name) for option in options.HPARAMS})
