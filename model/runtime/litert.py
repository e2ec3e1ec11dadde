"""LiteRT serving without TensorFlow: run a version's (or the zero-shot model's) .tflite files.

A model runs as three .tflite files: the backbone (pixels -> features), then on its features the
softmax head and the pet gate (the backbone's ImageNet classifier), each in float or full int8
form. `model.litert` converts them with TensorFlow (in a retrain, or once per backbone for the
zero-shot model); this module only loads and runs them, with numpy and `ai_edge_litert`, so a
CPU worker answers photos without importing TensorFlow.

Runtime: `ai_edge_litert.interpreter.Interpreter` (tf.lite.Interpreter is deprecated). An
interpreter is not thread-safe, so a `Runner` keeps one per calling thread.
"""

from __future__ import annotations

import importlib.util
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from ai_edge_litert.interpreter import Interpreter

from model.runtime import imagenet
from model.runtime.home import folder_name

ENGINES = ("auto", "tf", "litert")
FLOAT, INT8 = "float", "int8"
PRECISIONS = (FLOAT, INT8)

# Inside a version folder, next to the SavedModel: one file per part and precision.
VERSION_DIR = "litert"
BACKBONE, HEAD, GATE = "backbone", "head", "gate"
# Under BREEDBOT_HOME/litert: the zero-shot model of one named backbone, made once.
ZERO_SHOT_FILE = "zero_shot.json"
# Bump when the converted graphs change, so stale conversions in BREEDBOT_HOME are not reused.
CONVERSION_VERSION = 2
# Under BREEDBOT_HOME/litert, one folder per backbone identity: its float conversions, made once.
FEATURES_FILE = "features_float.tflite"
GATE_FILE = "gate_float.tflite"

# Interpreter batch per precision, from photos/s on 2 cores with real photos at batch 1, 4, 8, 32:
# float 190, 193, 179, 166 (XNNPACK float gains nothing from batching); int8 390, 402, 438, 430.
BATCH_SIZES = {FLOAT: 1, INT8: 8}
# Rows per call of the head and the gate: a matrix product, so one call per batch.
FEATURE_BATCH = 32

_PET_IDS = list(imagenet.PET_CLASS_IDS)
_GATE_MASK = np.isin(np.arange(imagenet.NUM_CLASSES), imagenet.CARNIVORE_CLASS_IDS)


def home_dir(home: Path, backbone_identity: str) -> Path:
    """Folder under BREEDBOT_HOME for the conversions of one backbone export."""
    return Path(home) / "litert" / f"{folder_name(backbone_identity)}-c{CONVERSION_VERSION}"


class NotConverted(LookupError):
    """The zero-shot model of this backbone has not been converted into BREEDBOT_HOME yet."""


def _gpu_present() -> bool:
    # Without importing TensorFlow: the NVIDIA driver lists its GPUs under /proc.
    gpus = Path("/proc/driver/nvidia/gpus")
    return gpus.is_dir() and any(gpus.iterdir())


def resolve_engine(engine: str) -> str:
    """The engine to use: "auto" is tf where TensorFlow is installed and a GPU is, else litert."""
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if engine == "auto":
        tensorflow = importlib.util.find_spec("tensorflow") is not None
        return "tf" if tensorflow and _gpu_present() else "litert"
    return engine


class Runner:
    """A .tflite model with one input, run batch-wise, one interpreter per calling thread.

    Each interpreter keeps one input batch size: resizing one re-plans XNNPACK (up to a second),
    so a batch runs as full chunks of `batch_size` and the remainder one row at a time.
    """

    def __init__(self, path: Path, *, num_threads: int | None = None, batch_size: int = 1):
        self.path = Path(path)
        self.num_threads = num_threads or os.cpu_count() or 1
        self.batch_size = batch_size
        self._local = threading.local()
        runner = self._runner(1)
        inputs = runner.get_input_details()
        (self.input_name,) = inputs
        self.input_dims = tuple(int(d) for d in inputs[self.input_name]["shape"][1:])
        details = runner.get_output_details()
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

    def __call__(self, inputs: np.ndarray) -> dict[str, np.ndarray]:
        """Every output for a float32 batch (pixels in [0,1] or features), over all chunks."""
        inputs = np.ascontiguousarray(inputs, np.float32)
        parts: dict[str, list[np.ndarray]] = {
            name: [np.zeros((0, *dims), np.float32)] for name, dims in self.output_dims.items()
        }
        for start, size in self._chunks(len(inputs)):
            out = self._runner(size)(**{self.input_name: inputs[start : start + size]})
            for name, chunks in parts.items():
                chunks.append(out[name])
        return {name: np.concatenate(chunks) for name, chunks in parts.items()}


class Pipeline:
    """Backbone, then the head and the pet gate on its features: one model's files as one call.

    Without a head (the zero-shot model) the logits are the gate's on the ImageNet pet classes;
    without a gate (a backbone with no ImageNet classifier) the gate is unknown.
    """

    def __init__(self, backbone: Runner, head: Runner | None, gate: Runner | None):
        self.backbone, self.head, self.gate = backbone, head, gate
        self.image_size = backbone.input_dims[0]  # the side of the square photos it takes

    def __call__(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """Head logits and, when there is a gate, ImageNet logits for float32 pixels."""
        features = self.backbone(images)["feature_vector"]
        out = {"features": features}
        if self.gate is not None:
            out["imagenet_logits"] = self.gate(features)["imagenet_logits"]
        if self.head is not None:
            out["logits"] = self.head(features)["logits"]
        else:
            out["logits"] = out["imagenet_logits"][:, _PET_IDS]
        return out


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
            "pet_in_top5": np.zeros(n, np.float32),
        }
    inet = _softmax(outputs["imagenet_logits"].astype(np.float64))
    top5 = np.argsort(-inet, axis=1, kind="stable")[:, :5]
    return {
        "probabilities": probabilities,
        **({"features": outputs["features"]} if "features" in outputs else {}),
        "imagenet_probabilities": inet.astype(np.float32),
        "pet_probability": inet[:, _GATE_MASK].sum(axis=1).astype(np.float32),
        "imagenet_class": inet.argmax(axis=1).astype(np.int32),
        "imagenet_probability": inet.max(axis=1).astype(np.float32),
        "pet_in_top5": _GATE_MASK[top5].any(axis=1).astype(np.float32),
    }


def part_file(part: str, precision: str) -> str:
    """File name of one part (backbone, head, gate) in one precision inside VERSION_DIR."""
    return f"{part}_{precision}.tflite"


def version_pipeline(
    directory: Path, precision: str, *, num_threads: int | None = None
) -> Pipeline | None:
    """A version's LiteRT model in one precision, or None if the folder lacks its files."""
    path = {part: Path(directory) / part_file(part, precision) for part in (BACKBONE, HEAD, GATE)}
    if not (path[BACKBONE].is_file() and path[HEAD].is_file()):
        return None
    return Pipeline(
        Runner(path[BACKBONE], num_threads=num_threads, batch_size=BATCH_SIZES[precision]),
        Runner(path[HEAD], num_threads=num_threads, batch_size=FEATURE_BATCH),
        Runner(path[GATE], num_threads=num_threads, batch_size=FEATURE_BATCH)
        if path[GATE].is_file()
        else None,
    )


def zero_shot_dir(home: Path, backbone: str) -> Path:
    """Where the zero-shot model of a named backbone lies under BREEDBOT_HOME."""
    return Path(home) / "litert" / f"zero-shot-{backbone}-c{CONVERSION_VERSION}"


def zero_shot_ready(home: Path, backbone: str) -> bool:
    """True once `model.litert.prepare_zero_shot` converted this backbone's zero-shot model."""
    # Its index is written last, so a folder that has one is complete.
    return (zero_shot_dir(home, backbone) / ZERO_SHOT_FILE).is_file()


def zero_shot_pipeline(home: Path, backbone: str, *, num_threads: int | None = None) -> Pipeline:
    """The zero-shot pet model (ImageNet head on its pet classes) as LiteRT float."""
    folder = zero_shot_dir(home, backbone)
    if not zero_shot_ready(home, backbone):
        raise NotConverted(f"{backbone} has no zero-shot LiteRT model in {home} yet")
    files = json.loads((folder / ZERO_SHOT_FILE).read_text("utf-8"))
    return Pipeline(
        Runner(folder / files[BACKBONE], num_threads=num_threads),
        None,
        Runner(folder / files[GATE], num_threads=num_threads, batch_size=FEATURE_BATCH),
    )
