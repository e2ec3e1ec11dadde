"""Exports: the float and int8 .tflite of a model folder (`export --tflite`), and the portable
bundle a user takes anywhere (`export --onnx`, `/export`): one file per format that takes an RGB
photo of any size as uint8 and resizes and scales it inside, beside labels.txt and README.txt.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from model import backbones, data, serving, train
from model.hparams import DEFAULT_BACKBONE
from model.litert import write_atomically
from model.portable import (
    LABELS_FILE,
    ONNX_FILE,
    README_FILE,
    labels_metadata,
    portable_file,
    readme_text,
)
from model.runtime import imagenet, litert
from model.runtime.classifier import METRICS_FILE, read_labels
from model.runtime.home import default_home

FLOAT_FILE = "model_float.tflite"
INT8_FILE = "model_int8.tflite"
# An opset every ONNX Runtime since 1.12 (2022) runs.
ONNX_OPSET = 17
FORMATS = ("tflite", "onnx")


def export_tflite(model_dir: Path) -> list[Path]:
    """Convert the float-batch signature; both files take [N,S,S,3] pixels in [0,1]."""
    model_dir = Path(model_dir)
    saved = str(model_dir / train.SAVED_MODEL_DIR)
    written = []
    for name, optimize in ((FLOAT_FILE, False), (INT8_FILE, True)):
        converter = tf.lite.TFLiteConverter.from_saved_model(saved, ["classify_images"])
        if optimize:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        path = model_dir / name
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(converter.convert())
        tmp.replace(path)
        written.append(path)
    return written


@dataclass(frozen=True)
class Source:
    """What a portable export is made of: the classifier module and what it answers."""

    module: serving.ClassifierModule
    labels: list[str]
    names: list[str]
    image_size: int
    precision: str  # what breedbot serves this model as on a CPU: "float" or "int8"
    has_gate: bool
    backbone: str


def load_source(
    model_dir: Path | None, *, home: Path | None = None, backbone: str = DEFAULT_BACKBONE
) -> Source:
    """A version folder's classifier (its backbone plus its head), or the zero-shot model's."""
    home = Path(home) if home else default_home()
    if model_dir is None:
        bb = backbones.load_backbone(backbone, home)
        labels = imagenet.pet_class_labels()
        module = serving.zero_shot_module(bb.module, labels, bb.image_size)
        names = imagenet.pet_class_names()
        return Source(module, labels, names, bb.image_size, litert.FLOAT, True, bb.handle)
    metrics = json.loads((Path(model_dir) / METRICS_FILE).read_text("utf-8"))
    bb = backbones.load_backbone(metrics["backbone"]["handle"], home)
    layer = np.load(Path(model_dir) / train.HEAD_FILE)
    labels = read_labels(model_dir)
    module = serving.ClassifierModule(
        bb.module, layer["kernel"], layer["bias"], labels, image_size=bb.image_size
    )
    precision = metrics.get("litert", {}).get("served", litert.FLOAT)
    names = [data.display_name(label) for label in labels]
    return Source(module, labels, names, bb.image_size, precision, bb.has_imagenet, bb.handle)


def portable_graph(source: Source) -> tf.types.experimental.ConcreteFunction:
    """uint8 [1, H, W, 3] RGB of any size -> {"probabilities", "pet_probability", "image_size"}.

    Plain bilinear resizing: the antialiased kind breedbot's TensorFlow path uses is no LiteRT
    builtin. On a photo already at S x S it is the identity, which the README tells users to
    rely on for breedbot's exact answers.
    """
    size = source.image_size
    spec = tf.TensorSpec([1, None, None, 3], tf.uint8, name="image")

    @tf.function(input_signature=[spec], autograph=False)
    def classify(image: tf.Tensor) -> dict[str, tf.Tensor]:
        pixels = tf.image.resize(tf.cast(image, tf.float32), [size, size], method="bilinear")
        out = source.module.classify_images(tf.clip_by_value(pixels / 255.0, 0.0, 1.0))
        return {
            "probabilities": out["probabilities"],
            "pet_probability": out["pet_probability"],
            # The side it resizes to, so a runner can resize as breedbot does (see README).
            "image_size": tf.constant([size, size], tf.int32),
        }

    return classify.get_concrete_function()


def _tflite(graph: Any, source: Source, path: Path, int8: bool) -> Path:
    converter = tf.lite.TFLiteConverter.from_concrete_functions([graph], source.module)
    if int8:
        # Dynamic range: int8 weights, float activations; no calibration photos needed.
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    write_atomically(path, converter.convert())
    return path


def _onnx(graph: Any, source: Source, path: Path) -> Path:
    import tf2onnx
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    # tf2onnx turns captured constants of a loaded module into extra inputs: freeze them first.
    frozen = convert_variables_to_constants_v2(graph)
    inputs = [t.name for t in frozen.inputs]
    outputs = [t.name for t in frozen.outputs]
    # A dict output flattens in sorted key order.
    names = {t: k for t, k in zip(outputs, sorted(graph.structured_outputs), strict=True)}
    model, _ = tf2onnx.convert.from_graph_def(
        frozen.graph.as_graph_def(),
        input_names=inputs,
        output_names=outputs,
        opset=ONNX_OPSET,
        tensors_to_rename={**names, inputs[0]: "image"},
    )
    for key, value in labels_metadata(source.labels).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    write_atomically(path, model.SerializeToString())
    return path


def export_portable(
    source: Source, out_dir: Path, formats: Sequence[str] = ("tflite",)
) -> list[Path]:
    """Write the chosen formats, labels.txt and README.txt into `out_dir`; returns their paths.

    The .tflite is in the precision breedbot serves (int8 as dynamic range); ONNX is float.
    """
    unknown = set(formats) - set(FORMATS)
    if unknown:
        raise ValueError(f"unknown export format(s): {', '.join(sorted(unknown))}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    graph = portable_graph(source)
    written = []
    if "tflite" in formats:
        name = portable_file(source.precision)
        written.append(_tflite(graph, source, out_dir / name, source.precision == litert.INT8))
    if "onnx" in formats:
        written.append(_onnx(graph, source, out_dir / ONNX_FILE))
    labels = out_dir / LABELS_FILE
    labels.write_text("".join(f"{label}\n" for label in source.labels), "utf-8")
    readme = out_dir / README_FILE
    model_files = [p.name for p in written]
    readme.write_text(
        readme_text(model_files, source.image_size, source.has_gate, source.backbone), "utf-8"
    )
    return [*written, labels, readme]
