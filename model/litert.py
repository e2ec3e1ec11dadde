"""CPU inference through LiteRT (the TFLite interpreter with its XNNPACK delegate).

Conversion: a backbone (for bottleneck extraction), or a backbone with its softmax head and the
ImageNet logits of the pet gate (for serving), becomes a .tflite file in float or full int8 form.
Full int8 is calibrated on real photos and keeps float32 inputs and outputs, so both forms take
the same pixels as the TensorFlow path. The graphs stop at logits; `classification` turns them
into the dict `ClassifierModule.classify_images` returns, so the two engines share one interface.

Runtime: `ai_edge_litert.interpreter.Interpreter` (tf.lite.Interpreter is deprecated). An
interpreter is not thread-safe, so a `Runner` keeps one per calling thread.
"""

from __future__ import annotations

import os
import re
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter

from model import backbones, imagenet, serving
from model.images import IMAGE_SIZE, to_float

ENGINES = ("auto", "tf", "litert")
FLOAT, INT8 = "float", "int8"
PRECISIONS = (FLOAT, INT8)

# Inside a version folder, next to the SavedModel.
VERSION_DIR = "litert"
CLASSIFIER_FILES = {FLOAT: "classifier_float.tflite", INT8: "classifier_int8.tflite"}
# Under BREEDBOT_HOME, one folder per backbone identity.
FEATURES_FILE = "features_float.tflite"
ZERO_SHOT_FILE = "zero_shot_float.tflite"
# Bump when the converted graphs change, so stale conversions in BREEDBOT_HOME are not reused.
CONVERSION_VERSION = 1

# Interpreter batch per precision, from photos/s on 2 cores with real photos at batch 1, 4, 8, 32:
# float 190, 193, 179, 166 (XNNPACK float gains nothing from batching); int8 390, 402, 438, 430.
BATCH_SIZES = {FLOAT: 1, INT8: 8}
# Photos of the version's training split that calibrate its int8 form. On pets-dev, 16, 64 and 256
# gave 99.7, 99.5 and 99.5 % top-1 agreement with float over all 599 photos, for 2.6, 5 and 15 s.
CALIBRATION_IMAGES = 32
EVAL_BATCH = 32
# int8 is served only when it loses at most this much hidden-split accuracy against float...
MAX_INT8_ACCURACY_LOSS = 0.01
# ...and agrees with float on at least this share of top-1 answers.
MIN_INT8_AGREEMENT = 0.98

_IMAGES_SPEC = tf.TensorSpec([None, IMAGE_SIZE, IMAGE_SIZE, 3], tf.float32, name="images")
_PET_MASK = np.isin(np.arange(imagenet.NUM_CLASSES), imagenet.PET_CLASS_IDS)


def resolve_engine(engine: str) -> str:
    """The engine to use: "auto" means tf when TensorFlow sees a GPU, else litert."""
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if engine == "auto":
        return "tf" if tf.config.list_physical_devices("GPU") else "litert"
    return engine


def features_graph(backbone: Any) -> tf.types.experimental.ConcreteFunction:
    """images -> {"feature_vector"} of a loaded backbone module."""

    @tf.function(input_signature=[_IMAGES_SPEC], autograph=False)
    def features(images: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"feature_vector": backbone(images)}

    return features.get_concrete_function()


def classifier_graph(
    backbone: Any, kernel: np.ndarray, bias: np.ndarray, *, head_on_logits: bool = False
) -> tf.types.experimental.ConcreteFunction:
    """images -> {"logits" of the head, "imagenet_logits" of the pet gate when there are any}."""
    kernel = tf.constant(kernel, tf.float32)
    bias = tf.constant(bias, tf.float32)
    has_imagenet = hasattr(backbone, "features_and_logits")

    @tf.function(input_signature=[_IMAGES_SPEC], autograph=False)
    def logits(images: tf.Tensor) -> dict[str, tf.Tensor]:
        if not has_imagenet:
            return {"logits": tf.matmul(backbone(images), kernel) + bias}
        out = backbone.features_and_logits(images)
        head_in = out["logits"] if head_on_logits else out["feature_vector"]
        return {"logits": tf.matmul(head_in, kernel) + bias, "imagenet_logits": out["logits"]}

    return logits.get_concrete_function()


def convert(
    graph: tf.types.experimental.ConcreteFunction,
    owner: Any,
    path: Path,
    calibration: np.ndarray | None = None,
) -> Path:
    """Write `graph` as float .tflite, or as full int8 calibrated on `calibration` pixels.

    `owner` is the object holding the graph's variables. int8 keeps float32 inputs and outputs.
    The file is written under a temporary name and renamed, so readers never see a partial one.
    """
    converter = tf.lite.TFLiteConverter.from_concrete_functions([graph], owner)
    if calibration is not None:
        if len(calibration) == 0:
            raise ValueError("int8 calibration needs at least one photo")
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([image[None]] for image in calibration)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    write_atomically(Path(path), converter.convert())
    return Path(path)


def write_atomically(path: Path, content: bytes) -> None:
    """Write to a temporary file beside `path`, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(content)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; these are ordinary cache files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def home_dir(home: Path, backbone_identity: str) -> Path:
    """Folder under BREEDBOT_HOME for the conversions of one backbone export."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", backbone_identity).strip("._")[-120:]
    return Path(home) / "litert" / f"{safe}-c{CONVERSION_VERSION}"


class Runner:
    """A .tflite model run batch-wise, one interpreter per calling thread.

    Each interpreter keeps one input batch size: resizing one re-plans XNNPACK (up to a second),
    so a batch runs as full chunks of `batch_size` and the remainder one image at a time.
    """

    def __init__(self, path: Path, *, num_threads: int | None = None, batch_size: int = 1):
        self.path = Path(path)
        self.num_threads = num_threads or os.cpu_count() or 1
        self.batch_size = batch_size
        self._local = threading.local()
        details = self._runner(1).get_output_details()
        self.output_dims = {name: tuple(d["shape"][1:]) for name, d in details.items()}

    def _runner(self, batch: int) -> Any:
        runners = getattr(self._local, "runners", None)
        if runners is None:
            runners = self._local.runners = {}
        if batch not in runners:
            interpreter = Interpreter(model_path=str(self.path), num_threads=self.num_threads)
            runners[batch] = interpreter.get_signature_runner()  # sized on its first call
        return runners[batch]

    def _chunks(self, n: int) -> Iterator[tuple[int, int]]:
        full = n - n % self.batch_size
        yield from ((s, self.batch_size) for s in range(0, full, self.batch_size))
        yield from ((s, 1) for s in range(full, n))

    def __call__(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """Every output for float32 images [N,224,224,3] in [0,1], concatenated over chunks."""
        images = np.ascontiguousarray(images, np.float32)
        parts: dict[str, list[np.ndarray]] = {
            name: [np.zeros((0, *dims), np.float32)] for name, dims in self.output_dims.items()
        }
        for start, size in self._chunks(len(images)):
            out = self._runner(size)(images=images[start : start + size])
            for name, chunks in parts.items():
                chunks.append(out[name])
        return {name: np.concatenate(chunks) for name, chunks in parts.items()}


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def classification(outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Head and pet-gate logits -> the outputs of `ClassifierModule.classify_images`."""
    probabilities = _softmax(outputs["logits"].astype(np.float64)).astype(np.float32)
    n = len(probabilities)
    if "imagenet_logits" not in outputs:  # the backbone has no ImageNet head: gate unknown
        return {
            "probabilities": probabilities,
            "pet_probability": -np.ones(n, np.float32),
            "imagenet_class": -np.ones(n, np.int32),
            "imagenet_probability": np.zeros(n, np.float32),
        }
    inet = _softmax(outputs["imagenet_logits"].astype(np.float64))
    return {
        "probabilities": probabilities,
        "pet_probability": inet[:, _PET_MASK].sum(axis=1).astype(np.float32),
        "imagenet_class": inet.argmax(axis=1).astype(np.int32),
        "imagenet_probability": inet.max(axis=1).astype(np.float32),
    }


def int8_decision(
    n_test: int, float_accuracy: float, int8_accuracy: float, agreement: float
) -> str:
    """The precision a version serves: int8 only if it keeps accuracy and agrees with float."""
    keeps_accuracy = int8_accuracy >= float_accuracy - MAX_INT8_ACCURACY_LOSS
    agrees = agreement >= MIN_INT8_AGREEMENT
    return INT8 if n_test > 0 and keeps_accuracy and agrees else FLOAT


def export_version(
    backbone: Any,
    kernel: np.ndarray,
    bias: np.ndarray,
    directory: Path,
    calibration: np.ndarray,
    test_photos: np.ndarray,
    test_labels: np.ndarray,
    *,
    num_threads: int | None = None,
) -> dict:
    """Write a version's float and int8 classifiers, measure both on its test split, decide.

    `calibration` and `test_photos` are decoded uint8 photos [N,224,224,3]: the calibration
    ones are the version's own training images. The returned dict goes into metrics.json; its
    "served" entry is the precision to serve.
    """
    started = time.perf_counter()
    graph = classifier_graph(backbone, kernel, bias)
    directory = Path(directory)
    paths = {
        FLOAT: convert(graph, backbone, directory / CLASSIFIER_FILES[FLOAT]),
        INT8: convert(graph, backbone, directory / CLASSIFIER_FILES[INT8], to_float(calibration)),
    }
    convert_seconds = time.perf_counter() - started
    runners = {
        p: Runner(path, num_threads=num_threads, batch_size=BATCH_SIZES[p])
        for p, path in paths.items()
    }
    top1: dict[str, list[np.ndarray]] = {p: [np.zeros(0, np.int64)] for p in paths}
    for start in range(0, len(test_photos), EVAL_BATCH):
        pixels = to_float(test_photos[start : start + EVAL_BATCH])
        for p, runner in runners.items():
            top1[p].append(runner(pixels)["logits"].argmax(1))
    guess = {p: np.concatenate(chunks) for p, chunks in top1.items()}
    n = len(test_labels)
    accuracy = {p: float((g == test_labels).mean()) if n else 0.0 for p, g in guess.items()}
    agreement = float((guess[FLOAT] == guess[INT8]).mean()) if n else 0.0
    return {
        "served": int8_decision(n, accuracy[FLOAT], accuracy[INT8], agreement),
        "rule": (
            f"int8 if its test accuracy is at most {MAX_INT8_ACCURACY_LOSS:.0%} below float "
            f"and its top-1 agreement with float is at least {MIN_INT8_AGREEMENT:.0%}"
        ),
        "n_test": n,
        "int8_agreement": round(agreement, 4),
        "calibration_images": len(calibration),
        "convert_seconds": round(convert_seconds, 3),
        **{
            p: {
                "file": f"{VERSION_DIR}/{path.name}",
                "bytes": path.stat().st_size,
                "test_accuracy": round(accuracy[p], 4),
            }
            for p, path in paths.items()
        },
    }


def features_runner(
    backbone: backbones.Backbone,
    home: Path,
    *,
    num_threads: int | None = None,
    batch_size: int = 1,
) -> Runner:
    """The LiteRT float twin of `backbone.features`, converted once into BREEDBOT_HOME."""
    path = home_dir(home, backbone.identity) / FEATURES_FILE
    if not path.is_file():  # only ever created by an atomic rename, so it is complete
        convert(features_graph(backbone.module), backbone.module, path)
    return Runner(path, num_threads=num_threads, batch_size=batch_size)


def zero_shot_runner(
    backbone: backbones.Backbone,
    home: Path,
    *,
    num_threads: int | None = None,
    batch_size: int = 1,
) -> Runner:
    """The zero-shot pet model (ImageNet head on its pet classes) as LiteRT float, made once."""
    path = home_dir(home, backbone.identity) / ZERO_SHOT_FILE
    if not path.is_file():
        module = serving.zero_shot_module(backbone.module, [])  # labels are not in the graph
        kernel, bias = module.kernel.numpy(), module.bias.numpy()
        graph = classifier_graph(backbone.module, kernel, bias, head_on_logits=True)
        convert(graph, backbone.module, path)
    return Runner(path, num_threads=num_threads, batch_size=batch_size)
