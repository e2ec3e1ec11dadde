"""One self-contained SavedModel: preprocessing, backbone, new head and the pet gate.

The serving signature takes encoded image bytes; a second one takes a float batch. Both run the
same graph, so a served model cannot drift from the one that was trained and evaluated.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import tensorflow as tf
from tensorflow.python.saved_model import fingerprinting_utils

from model import backbones
from model.runtime import imagenet, images
from model.runtime.home import folder_name

log = logging.getLogger(__name__)

# SavedModels kept under BREEDBOT_HOME as templates: one per backbone and number of classes.
TEMPLATES_DIR = "saved_model_templates"
KEEP_TEMPLATES = 4
# Checkpoint keys of the head's variables (ClassifierModule.kernel and .bias).
_HEAD_KEYS = ("kernel/.ATTRIBUTES/VARIABLE_VALUE", "bias/.ATTRIBUTES/VARIABLE_VALUE")
# Templates are stale when the code that builds the graph, or TensorFlow, changes.
_CODE_TAG = hashlib.sha256(
    b"".join(Path(f).read_bytes() for f in (__file__, imagenet.__file__, images.__file__))
    + tf.__version__.encode()
).hexdigest()[:12]

BYTES_SPEC = tf.TensorSpec([None], tf.string, name="image_bytes")


def images_spec(size: int) -> tf.TensorSpec:
    """A float batch of [size, size] RGB photos in [0, 1]."""
    return tf.TensorSpec([None, size, size, 3], tf.float32, name="images")


def decode_for_serving(image_bytes: tf.Tensor, size: int) -> tf.Tensor:
    """Encoded images -> float32 [N,size,size,3] in [0,1]; the TF twin of images.decode_image."""

    def one(data: tf.Tensor) -> tf.Tensor:
        img = tf.io.decode_image(data, channels=3, dtype=tf.uint8, expand_animations=False)
        img = tf.image.resize(img, [size, size], method="bilinear", antialias=True)
        return tf.clip_by_value(img / 255.0, 0.0, 1.0)

    return tf.map_fn(
        one, image_bytes, fn_output_signature=tf.TensorSpec([size, size, 3], tf.float32)
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
        image_size: int,
        head_on_logits: bool = False,
    ):
        super().__init__()
        self.image_size = image_size
        # The backbone fixes the input side, so the signatures are made per instance.
        self.classify_images = tf.function(
            self._classify_images, input_signature=[images_spec(image_size)], autograph=False
        )
        self.classify_bytes = tf.function(
            self._classify_bytes, input_signature=[BYTES_SPEC], autograph=False
        )
        self.backbone = backbone
        self.kernel = tf.Variable(kernel.astype(np.float32), trainable=False, name="kernel")
        self.bias = tf.Variable(bias.astype(np.float32), trainable=False, name="bias")
        self.labels = tf.constant(labels)
        self._head_on_logits = head_on_logits
        self._has_imagenet = hasattr(backbone, "features_and_logits")
        pets = np.zeros(imagenet.NUM_CLASSES, np.float32)
        pets[list(imagenet.CARNIVORE_CLASS_IDS)] = 1.0
        self.pet_mask = tf.constant(pets)

    def _classify_images(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        """Class probabilities, pet-gate mass and ImageNet best guess for a float batch."""
        n = tf.shape(images)[0]
        if self._has_imagenet:
            out = self.backbone.features_and_logits(images)
            features, logits = out["feature_vector"], out["logits"]
            inet = tf.nn.softmax(logits)
            pet = tf.reduce_sum(inet * self.pet_mask, axis=1)
            inet_class = tf.argmax(inet, axis=1, output_type=tf.int32)
            inet_prob = tf.reduce_max(inet, axis=1)
            top5 = tf.math.top_k(inet, k=5).indices
            in_top5 = tf.reduce_max(tf.gather(self.pet_mask, top5), axis=1)
        else:
            features = self.backbone(images)
            logits = features
            pet = -tf.ones([n])  # unknown: this backbone has no ImageNet head
            inet_class = -tf.ones([n], tf.int32)
            inet_prob = tf.zeros([n])
            in_top5 = tf.zeros([n])
        head_in = logits if self._head_on_logits else features
        probs = tf.nn.softmax(tf.matmul(head_in, self.kernel) + self.bias)
        return {
            "probabilities": probs,
            "pet_probability": pet,
            "imagenet_class": inet_class,
            "imagenet_probability": inet_prob,
            "pet_in_top5": in_top5,
        }

    def _classify_bytes(self, image_bytes: tf.Tensor) -> dict[str, tf.Tensor]:
        """Same as classify_images, from encoded JPEG/PNG/GIF/BMP/WebP bytes."""
        return self.classify_images(decode_for_serving(image_bytes, self.image_size))


def zero_shot_module(backbone: tf.Module, labels: list[str], image_size: int) -> ClassifierModule:
    """The default model: ImageNet's head restricted to its 118 dog and 5 cat classes."""
    ids = list(imagenet.PET_CLASS_IDS)
    select = np.zeros((imagenet.NUM_CLASSES, len(ids)), np.float32)
    select[ids, np.arange(len(ids))] = 1.0
    return ClassifierModule(
        backbone, select, np.zeros(len(ids)), labels, image_size=image_size, head_on_logits=True
    )


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


def save_retrained(
    backbone: backbones.Backbone,
    kernel: np.ndarray,
    bias: np.ndarray,
    labels: list[str],
    path: Path,
    home: Path,
) -> None:
    """Write a retrained classifier's SavedModel, reusing the graph of an earlier one of its shape.

    Tracing and serialising the graph takes about a second, and it is the same for every model
    with this backbone and this number of classes: only the head's two variables differ. So the
    first such model is also kept under `home` as a template, and later ones copy its graph and
    write a checkpoint with the template's keys and the new head.
    """
    template = _template_dir(home, backbone.identity, kernel.shape[1])
    if (template / "saved_model.pb").is_file():
        try:
            _from_template(template, Path(path), kernel, bias)
            return
        except Exception:
            # Pruned by another worker while being read, or damaged (TensorFlow's checkpoint
            # reader raises anything from OpError to IndexError): a full save replaces it. A
            # full disk fails the full save too, and that error is the one raised.
            log.warning("SavedModel template %s unusable; saving in full", template, exc_info=True)
            shutil.rmtree(path, ignore_errors=True)
            shutil.rmtree(template, ignore_errors=True)
    module = ClassifierModule(backbone.module, kernel, bias, labels, image_size=backbone.image_size)
    save(module, Path(path))
    _keep_template(Path(path), template)
    prune_templates(home, KEEP_TEMPLATES)


def _template_dir(home: Path, backbone_identity: str, n_classes: int) -> Path:
    name = f"{folder_name(backbone_identity)}-c{n_classes}-{_CODE_TAG}"
    return Path(home) / TEMPLATES_DIR / name


def _from_template(template: Path, path: Path, kernel: np.ndarray, bias: np.ndarray) -> None:
    reader = tf.train.load_checkpoint(str(template / "variables" / "variables"))
    os.utime(template)  # recently used: pruned last
    head = dict(zip(_HEAD_KEYS, (kernel, bias), strict=True))
    names = sorted(reader.get_variable_to_dtype_map())
    tensors = [
        tf.constant(head[name], tf.float32) if name in head else reader.get_tensor(name)
        for name in names
    ]
    (path / "variables").mkdir(parents=True)
    (path / "assets").mkdir()
    shutil.copyfile(template / "saved_model.pb", path / "saved_model.pb")
    # The checkpoint's object graph is the template's, so the copied graph finds every variable.
    tf.raw_ops.SaveV2(
        prefix=str(path / "variables" / "variables"),
        tensor_names=names,
        shape_and_slices=[""] * len(names),
        tensors=tensors,
    )
    fingerprinting_utils.write_fingerprint(str(path))


def _keep_template(saved: Path, template: Path) -> None:
    """Copy a fresh SavedModel into the templates; a concurrent copy that lands first wins.

    A template only saves time, so failing to keep one (a full disk) is logged, not raised.
    """
    tmp: Path | None = None
    try:
        template.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=template.parent, prefix=f".{template.name}."))
        shutil.copytree(saved, tmp, dirs_exist_ok=True)
        os.replace(tmp, template)
    except OSError as exc:
        if not template.is_dir():
            log.warning("could not keep SavedModel template %s: %s", template, exc)
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def prune_templates(home: Path, keep: int) -> None:
    """Keep the `keep` most recently used SavedModel templates under `home`, drop the rest.

    Also drops the half-written copies a crash left (hidden folders older than an hour; a live
    one is seconds old).
    """
    root = Path(home) / TEMPLATES_DIR
    used = {}
    for path in root.glob("*"):
        with contextlib.suppress(FileNotFoundError):  # another worker pruning at the same time
            used[path] = path.stat().st_mtime
    templates = [path for path in used if not path.name.startswith(".")]
    stale = sorted(templates, key=used.__getitem__, reverse=True)[keep:]
    stale += [p for p in used if p.name.startswith(".") and time.time() - used[p] > 3600]
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
