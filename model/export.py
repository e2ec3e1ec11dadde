"""TFLite export of a model folder: float and int8 (dynamic-range) flatbuffers."""

from __future__ import annotations

from pathlib import Path

import tensorflow as tf

from model import train

FLOAT_FILE = "model_float.tflite"
INT8_FILE = "model_int8.tflite"


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
