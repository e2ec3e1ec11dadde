"""Retrain hyperparameters: retrain.py's flag names and meanings, plus breedbot's additions.

Kept free of TensorFlow so that the CLI can parse its flags without loading it. Names, types,
ranges and help texts live in `contract/options.py`, shared with the bot.
"""

from __future__ import annotations

from dataclasses import dataclass

from contract import options

DEFAULT_BACKBONE = "efficientnet_lite0"  # the zero-shot model's, and any single-backbone default
# `--architecture auto`: these backbones, fastest first, compete by cross-validated accuracy.
AUTO = "auto"
AUTO_CANDIDATES = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
# The backbones breedbot builds from its own packages (model.backbones.NAMED_BACKBONES): the only
# ones a queued job or a version record may name. A TF Hub URL or path stays a CLI-only option.
BACKBONE_NAMES = (*AUTO_CANDIDATES, "mobilenet_v1_100_224")
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
    # Evidence below it answers "not one of my breeds"; None: chosen by cross-validation
    # leaving whole classes out (model/openset_fit.py).
    open_set_threshold: float | None = None
    min_images_per_class: int = 3
    extraction_batch_size: int = 32


def validate(hparams: HParams) -> None:
    """Reject out-of-range values (an `OptionError`, a ValueError naming each flag)."""
    options.check({option.name: getattr(hparams, option.name) for option in options.HPARAMS})
