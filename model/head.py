"""The new softmax layer, trained on cached bottlenecks (retrain.py's `add_final_retrain_ops`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf
import tf_keras

# (step, total_steps, latest validation accuracy) -> None
StepFn = Callable[[int, int, float | None], None]


@dataclass(frozen=True)
class HeadConfig:
    """How the softmax layer is trained; built from HParams, which holds the defaults."""

    steps: int
    learning_rate: float
    batch_size: int
    eval_interval: int
    l2: float
    label_smoothing: float
    early_stopping_patience: int | None  # in eval intervals; None disables it
    class_weighting: bool
    seed: int


@dataclass
class Head:
    """Trained weights of the softmax layer plus its training curve."""

    kernel: np.ndarray  # [D, C]
    bias: np.ndarray  # [C]
    best_step: int
    history: dict[str, list[float]]

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        """Softmax over classes for a batch of bottlenecks."""
        logits = features @ self.kernel + self.bias
        logits -= logits.max(axis=1, keepdims=True)
        e = np.exp(logits)
        return e / e.sum(axis=1, keepdims=True)


def class_weights(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Per-class weights n / (C * count), so rare classes count as much as common ones."""
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    return np.where(counts > 0, len(labels) / (n_classes * np.maximum(counts, 1)), 0.0)


def _loss_fn(n_classes: int, config: HeadConfig):
    """Weighted, label-smoothed cross-entropy plus L2 on the kernel."""
    smooth = config.label_smoothing

    def loss(kernel, bias, x, y, w):
        logits = tf.matmul(x, kernel) + bias
        target = tf.one_hot(y, n_classes) * (1.0 - smooth) + smooth / n_classes
        ce = tf.nn.softmax_cross_entropy_with_logits(target, logits)
        data_loss = tf.reduce_sum(ce * w) / tf.reduce_sum(w)
        return data_loss + config.l2 * tf.reduce_sum(tf.square(kernel)), logits

    return loss


def train_head(
    train_x: np.ndarray,
    train_y: np.ndarray,
    val_x: np.ndarray,
    val_y: np.ndarray,
    n_classes: int,
    config: HeadConfig,
    *,
    log_dir: Path | None = None,
    on_step: StepFn | None = None,
) -> Head:
    """Fit a dense softmax layer with Adam on random batches, keeping the best validation loss.

    Steps run inside one compiled loop per evaluation interval: with cached bottlenecks the
    Python overhead of a per-step loop (or of Keras fit) would dominate the training time.
    """
    tf.random.set_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    dim = train_x.shape[1]
    limit = np.sqrt(6.0 / (dim + n_classes))
    kernel = tf.Variable(rng.uniform(-limit, limit, (dim, n_classes)).astype(np.float32))
    bias = tf.Variable(np.zeros(n_classes, np.float32))
    weights = class_weights(train_y, n_classes) if config.class_weighting else np.ones(n_classes)
    x = tf.constant(train_x, tf.float32)
    y = tf.constant(train_y, tf.int32)
    w = tf.constant(weights[train_y], tf.float32)
    vx, vy = tf.constant(val_x, tf.float32), tf.constant(val_y, tf.int32)
    loss_fn = _loss_fn(n_classes, config)
    optimizer = tf_keras.optimizers.Adam(config.learning_rate)
    n = len(train_y)
    batch = min(config.batch_size, n)

    @tf.function
    def run(steps: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        total_loss, correct = tf.constant(0.0), tf.constant(0.0)
        for _ in tf.range(steps):
            idx = tf.random.uniform(
                [batch], 0, n, dtype=tf.int32
            )  # retrain.py samples with replacement
            xb, yb, wb = tf.gather(x, idx), tf.gather(y, idx), tf.gather(w, idx)
            with tf.GradientTape() as tape:
                loss, logits = loss_fn(kernel, bias, xb, yb, wb)
            grads = tape.gradient(loss, [kernel, bias])
            optimizer.apply_gradients(zip(grads, [kernel, bias], strict=True))
            hits = tf.cast(tf.equal(tf.argmax(logits, 1, output_type=tf.int32), yb), tf.float32)
            total_loss += loss
            correct += tf.reduce_mean(hits)
        steps_f = tf.cast(steps, tf.float32)
        return total_loss / steps_f, correct / steps_f

    @tf.function
    def evaluate() -> tuple[tf.Tensor, tf.Tensor]:
        loss, logits = loss_fn(kernel, bias, vx, vy, tf.ones_like(vy, tf.float32))
        hits = tf.cast(tf.equal(tf.argmax(logits, 1, output_type=tf.int32), vy), tf.float32)
        return loss, tf.reduce_mean(hits)

    writers = (
        {k: tf.summary.create_file_writer(str(log_dir / k)) for k in ("train", "validation")}
        if log_dir is not None
        else {}
    )
    history: dict[str, list[float]] = {
        "loss": [],
        "accuracy": [],
        "val_loss": [],
        "val_accuracy": [],
    }
    best = (np.inf, 0, kernel.numpy(), bias.numpy())
    waited, step = 0, 0
    while step < config.steps:
        chunk = min(config.eval_interval, config.steps - step)
        loss, acc = (float(v) for v in run(tf.constant(chunk)))
        step += chunk
        val_loss, val_acc = (float(v) for v in evaluate()) if len(val_y) else (loss, acc)
        for key, value in zip(history, (loss, acc, val_loss, val_acc), strict=True):
            history[key].append(value)
        for split, (l_value, a_value) in (
            ("train", (loss, acc)),
            ("validation", (val_loss, val_acc)),
        ):
            if split in writers:
                with writers[split].as_default(step=step):
                    tf.summary.scalar("cross_entropy", l_value)
                    tf.summary.scalar("accuracy", a_value)
        if on_step is not None:
            on_step(step, config.steps, val_acc)
        if val_loss < best[0]:
            best, waited = (val_loss, step, kernel.numpy(), bias.numpy()), 0
        else:
            waited += 1
            if (
                config.early_stopping_patience is not None
                and waited >= config.early_stopping_patience
            ):
                break
    for writer in writers.values():
        writer.close()
    if config.early_stopping_patience is None:
        best = (history["val_loss"][-1], step, kernel.numpy(), bias.numpy())
    return Head(best[2], best[3], best[1], history)
