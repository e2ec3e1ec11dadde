"""`load_classifier`: a version folder or the zero-shot model, through LiteRT or TensorFlow.

TensorFlow is imported only on the paths that need it: the tf engine, a version without LiteRT
files, and converting the zero-shot model the first time it is used.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from model.hparams import BACKBONE_NAMES, DEFAULT_BACKBONE
from model.runtime import imagenet, litert, openset
from model.runtime.classifier import (
    METRICS_FILE,
    Classifier,
    ClassifyFn,
    read_labels,
    version_classifier,
    zero_shot_classifier,
)
from model.runtime.home import default_home

log = logging.getLogger(__name__)


def _tf_classify(module: Any) -> ClassifyFn:
    import tensorflow as tf

    def classify(pixels: np.ndarray) -> dict[str, np.ndarray]:
        out = module.classify_images(tf.constant(pixels, tf.float32))
        return {k: v.numpy() for k, v in out.items()}

    return classify


def _tf_zero_shot(home: Path, backbone: str) -> Classifier:
    from model import backbones, serving

    bb = backbones.load_backbone(backbone, home)
    labels = imagenet.pet_class_labels()
    module = serving.zero_shot_module(bb.module, labels, bb.image_size)
    classify = _tf_classify(module)
    names = imagenet.pet_class_names()
    return Classifier(
        classify,
        labels,
        names,
        None,
        engine="tf",
        image_size=bb.image_size,
        open_set=openset.OpenSet.zero_shot(),
    )


def _tf_version(model_dir: Path, home: Path) -> Classifier:
    import tensorflow as tf

    from model import data, train

    saved = model_dir / train.SAVED_MODEL_DIR
    if not saved.is_dir():
        # A version fetched from the blob store carries its layer, not the SavedModel.
        _rebuild_saved_model(model_dir, saved, home)
    module = tf.saved_model.load(str(saved))
    spec = module.signatures["classify_images"].structured_input_signature[1]["images"]
    labels = read_labels(model_dir)
    names = [data.display_name(x) for x in labels]
    size = int(spec.shape[1])
    open_set = openset.OpenSet.load(model_dir, labels)
    return Classifier(
        _tf_classify(module),
        labels,
        names,
        model_dir,
        engine="tf",
        image_size=size,
        open_set=open_set,
    )


def _rebuild_saved_model(model_dir: Path, saved: Path, home: Path) -> None:
    from model import backbones, serving, train

    metrics = json.loads((model_dir / METRICS_FILE).read_text("utf-8"))
    handle = metrics["backbone"]["handle"]
    if handle not in BACKBONE_NAMES:  # a fetched folder's metrics.json: hub.load() runs its graph
        raise ValueError(f"backbone {handle!r} is not one of {', '.join(BACKBONE_NAMES)}")
    layer = np.load(model_dir / train.HEAD_FILE)
    backbone = backbones.load_backbone(handle, home)
    partial = saved.with_name(f".{saved.name}.partial")
    serving.save_retrained(
        backbone, layer["kernel"], layer["bias"], read_labels(model_dir), partial, home
    )
    partial.replace(saved)


def _litert_zero_shot(home: Path, backbone: str, num_threads: int | None) -> Classifier:
    try:
        return zero_shot_classifier(home, backbone, num_threads=num_threads)
    except litert.NotConverted:
        from model import litert as conversion  # TensorFlow, once per backbone and home

        conversion.prepare_zero_shot(backbone, home)
        return zero_shot_classifier(home, backbone, num_threads=num_threads)


def load_classifier(
    model_dir: Path | None = None,
    *,
    home: Path | None = None,
    backbone: str = DEFAULT_BACKBONE,
    engine: str = "auto",
    precision: str = "auto",
    num_threads: int | None = None,
) -> Classifier:
    """A retrained version folder, or (model_dir None) the zero-shot ImageNet pet model.

    `engine`: "tf" (SavedModel), "litert" (CPU, XNNPACK) or "auto" (tf on a GPU, else litert).
    `precision` (litert only): "auto" serves what the version's metrics.json decided, else
    "float" or "int8". `num_threads`: LiteRT threads per interpreter (default: all cores).
    """
    engine = litert.resolve_engine(engine)
    if precision not in ("auto", *litert.PRECISIONS):
        raise ValueError(f"precision must be auto, float or int8, got {precision!r}")
    home = Path(home) if home else default_home()
    if model_dir is None:
        if engine == "tf":
            return _tf_zero_shot(home, backbone)
        if precision == litert.INT8:
            raise ValueError("the zero-shot model has no int8 form (nothing to calibrate it on)")
        return _litert_zero_shot(home, backbone, num_threads)
    model_dir = Path(model_dir)
    if engine == "litert":
        found = version_classifier(model_dir, precision, num_threads=num_threads)
        if found is not None:
            return found
        log.warning("%s: no LiteRT %s model; serving it through TensorFlow", model_dir, precision)
    return _tf_version(model_dir, home)
