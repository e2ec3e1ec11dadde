"""One self-contained SavedModel: preprocessing, backbone, new head and the pet gate.

The serving signature takes encoded image bytes; a second one takes a float batch. Both run the
same graph, so a served model cannot drift from the one that was trained and evaluated.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf

from model import imagenet
from model.images import IMAGE_SIZE

IMAGES_SPEC = tf.TensorSpec([None, IMAGE_SIZE, IMAGE_SIZE, 3], tf.float32, name="images")
BYTES_SPEC = tf.TensorSpec([None], tf.string, name="image_bytes")


def decode_for_serving(image_bytes: tf.Tensor) -> tf.Tensor:
    """Encoded images -> float32 [N,224,224,3] in [0,1]; the TF twin of images.decode_image."""

    def one(data: tf.Tensor) -> tf.Tensor:
        img = tf.io.decode_image(data, channels=3, dtype=tf.uint8, expand_animations=False)
        img = tf.image.resize(img, [IMAGE_SIZE, IMAGE_SIZE], method="bilinear", antialias=True)
        return tf.clip_by_value(img / 255.0, 0.0, 1.0)

    return tf.map_fn(
        one, image_bytes, fn_output_signature=tf.TensorSpec([IMAGE_SIZE, IMAGE_SIZE, 3], tf.float32)
    )


class ClassifierModule(tf.Module):
    """Backbone plus a linear softmax head on its features (or on its ImageNet logits)."""

    def __init__(
        self,
        backbone: tf.Module,
        kernel: np.ndarray,
        bias: np.ndarray,
        labels: list[str],
        *,
        head_on_logits: bool = False,
    ):
        super().__init__()
        self.backbone = backbone
        self.kernel = tf.Variable(kernel.astype(np.float32), trainable=False, name="kernel")
        self.bias = tf.Variable(bias.astype(np.float32), trainable=False, name="bias")
        self.labels = tf.constant(labels)
        self._head_on_logits = head_on_logits
        self._has_imagenet = hasattr(backbone, "features_and_logits")
        pets = np.zeros(imagenet.NUM_CLASSES, np.float32)
        pets[list(imagenet.PET_CLASS_IDS)] = 1.0
        self.pet_mask = tf.constant(pets)

    @tf.function(input_signature=[IMAGES_SPEC], autograph=False)
    def classify_images(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        """Class probabilities, pet-gate mass and ImageNet best guess for a float batch."""
        n = tf.shape(images)[0]
        if self._has_imagenet:
            out = self.backbone.features_and_logits(images)
            features, logits = out["feature_vector"], out["logits"]
            inet = tf.nn.softmax(logits)
            pet = tf.reduce_sum(inet * self.pet_mask, axis=1)
            inet_class = tf.argmax(inet, axis=1, output_type=tf.int32)
            inet_prob = tf.reduce_max(inet, axis=1)
        else:
            features = self.backbone(images)
            logits = features
            pet = -tf.ones([n])  # unknown: this backbone has no ImageNet head
            inet_class = -tf.ones([n], tf.int32)
            inet_prob = tf.zeros([n])
        head_in = logits if self._head_on_logits else features
        probs = tf.nn.softmax(tf.matmul(head_in, self.kernel) + self.bias)
        return {
            "probabilities": probs,
            "pet_probability": pet,
            "imagenet_class": inet_class,
            "imagenet_probability": inet_prob,
        }

    @tf.function(input_signature=[BYTES_SPEC], autograph=False)
    def classify_bytes(self, image_bytes: tf.Tensor) -> dict[str, tf.Tensor]:
        """Same as classify_images, from encoded JPEG/PNG/GIF/BMP/WebP bytes."""
        return self.classify_images(decode_for_serving(image_bytes))


def zero_shot_module(backbone: tf.Module, labels: list[str]) -> ClassifierModule:
    """The default model: ImageNet's head restricted to its 118 dog and 5 cat classes."""
    ids = list(imagenet.PET_CLASS_IDS)
    select = np.zeros((imagenet.NUM_CLASSES, len(ids)), np.float32)
    select[ids, np.arange(len(ids))] = 1.0
    return ClassifierModule(backbone, select, np.zeros(len(ids)), labels, head_on_logits=True)


def save(module: ClassifierModule, path: Path) -> None:
    """Write the SavedModel: bytes (`serving_default`) and float (`classify_images`) signatures."""
    tf.saved_model.save(
        module,
        str(path),
        signatures={
            "serving_default": module.classify_bytes.get_concrete_function(),
            "classify_images": module.classify_images.get_concrete_function(),
        },
    )
