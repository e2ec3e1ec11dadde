"""LiteRT conversion (TensorFlow): a version's and the zero-shot model's .tflite files.

`model.runtime.litert` runs them without TensorFlow. A model runs as three .tflite files: the
backbone (pixels -> features), then on its features the softmax head and the pet gate (the
backbone's ImageNet classifier), each in float or full int8 form. The backbone files depend only
on the backbone (float) or on the calibration photos (int8), so they are converted once into
BREEDBOT_HOME and a version gets its own links to them; only its small head is converted per
version. Full int8 is calibrated on real photos and keeps float32 inputs and outputs, so both
forms take the same pixels as the TensorFlow path. The graphs stop at logits; `classification`
turns them into the dict `ClassifierModule.classify_images` returns, so the two engines share
one interface.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from model import backbones
from model.features import ORIGINAL, Extraction, decode_all, extract
from model.runtime.home import place
from model.runtime.images import preprocessing_version, to_float
from model.runtime.litert import (
    BACKBONE,
    BATCH_SIZES,
    FEATURE_BATCH,
    FEATURES_FILE,
    FLOAT,
    GATE,
    GATE_FILE,
    HEAD,
    INT8,
    PRECISIONS,
    VERSION_DIR,
    ZERO_SHOT_FILE,
    Runner,
    home_dir,
    part_file,
    zero_shot_dir,
    zero_shot_ready,
)

# Photos of the version's training split that calibrate its int8 form. On pets-dev, 16, 64 and 256
# gave 99.7, 99.5 and 99.5 % top-1 agreement with float over all 599 photos, for 2.6, 5 and 15 s.
CALIBRATION_IMAGES = 32
# int8 sets (backbone and gate calibrated on one set of photos, about 5 MB) kept per backbone.
KEEP_INT8_SETS = 8
EVAL_BATCH = 32
# int8 is served only when it loses at most this much hidden-split accuracy against float...
MAX_INT8_ACCURACY_LOSS = 0.01
# ...and agrees with float on at least this share of top-1 answers.
MIN_INT8_AGREEMENT = 0.98


def features_graph(backbone: Any, image_size: int) -> tf.types.experimental.ConcreteFunction:
    """images [N, S, S, 3] -> {"feature_vector"} of a loaded backbone module (S = image_size)."""
    spec = tf.TensorSpec([None, image_size, image_size, 3], tf.float32, name="images")

    @tf.function(input_signature=[spec], autograph=False)
    def features(images: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"feature_vector": backbone(images)}

    return features.get_concrete_function()


def dense_graph(
    kernel: np.ndarray, bias: np.ndarray, output: str
) -> tf.types.experimental.ConcreteFunction:
    """features -> {output: features @ kernel + bias}: a head or the pet gate."""
    kernel = tf.constant(kernel, tf.float32)
    bias = tf.constant(bias, tf.float32)
    spec = tf.TensorSpec([None, kernel.shape[0]], tf.float32, name="features")

    @tf.function(input_signature=[spec], autograph=False)
    def dense(features: tf.Tensor) -> dict[str, tf.Tensor]:
        return {output: tf.matmul(features, kernel) + bias}

    return dense.get_concrete_function()


def convert(
    graph: tf.types.experimental.ConcreteFunction,
    owner: Any,
    path: Path,
    calibration: np.ndarray | None = None,
) -> Path:
    """Write `graph` as float .tflite, or as full int8 calibrated on `calibration` inputs.

    `owner` is the object holding the graph's variables (None for constants only). int8 keeps
    float32 inputs and outputs.
    The file is written under a temporary name and renamed, so readers never see a partial one.
    """
    # The converter saves the graph through its owner (without one it takes a deprecated path
    # that drops the signature); a graph of constants only needs an empty one.
    owner = tf.Module() if owner is None else owner
    converter = tf.lite.TFLiteConverter.from_concrete_functions([graph], owner)
    if calibration is not None:
        if len(calibration) == 0:
            raise ValueError("int8 calibration needs at least one photo")
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([row[None]] for row in calibration)
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


def int8_decision(
    n_test: int, float_accuracy: float, int8_accuracy: float, agreement: float
) -> str:
    """The precision a version serves: int8 only if it keeps accuracy and agrees with float."""
    keeps_accuracy = int8_accuracy >= float_accuracy - MAX_INT8_ACCURACY_LOSS
    agrees = agreement >= MIN_INT8_AGREEMENT
    return INT8 if n_test > 0 and keeps_accuracy and agrees else FLOAT


def _once(path: Path, make: Callable[[Path], object]) -> Path:
    """`path` in BREEDBOT_HOME, made by `make` unless an earlier run made it."""
    if not path.is_file():  # only ever created by an atomic rename, so it is complete
        make(path)
    return path


def features_file(backbone: backbones.Backbone, home: Path) -> Path:
    """The backbone as LiteRT float, converted once into BREEDBOT_HOME."""
    return _once(
        home_dir(home, backbone.identity) / FEATURES_FILE,
        lambda path: convert(
            features_graph(backbone.module, backbone.image_size), backbone.module, path
        ),
    )


def gate_file(backbone: backbones.Backbone, home: Path) -> Path | None:
    """The pet gate (ImageNet logits on features) as LiteRT float, made once; None if absent."""
    if not backbone.has_imagenet:
        return None
    return _once(
        home_dir(home, backbone.identity) / GATE_FILE,
        lambda path: convert(_gate(backbone), None, path),
    )


def _gate(backbone: backbones.Backbone) -> tf.types.experimental.ConcreteFunction:
    weights = backbones.imagenet_head(backbone.module)
    assert weights is not None
    return dense_graph(*weights, "imagenet_logits")


def calibration_tag(sha256s: Sequence[str], image_size: int) -> str:
    """Name of an int8 set: the calibration photos' content and the preprocessing version."""
    raw = "|".join([preprocessing_version(image_size), *sha256s])
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def int8_files(
    backbone: backbones.Backbone,
    home: Path,
    tag: str,
    photos: Callable[[], np.ndarray],
    features: np.ndarray,
) -> dict[str, Path]:
    """Backbone and gate as full int8, calibrated on `photos()` (and their float `features`).

    Named by `tag` (see `calibration_tag`), so a retrain on the same data reuses them and one on
    other data never does; `photos` is called only when a file has to be converted.
    """
    where = home_dir(home, backbone.identity)
    files = {
        BACKBONE: _once(
            where / f"features_int8-{tag}.tflite",
            lambda path: convert(
                features_graph(backbone.module, backbone.image_size),
                backbone.module,
                path,
                to_float(photos()),
            ),
        )
    }
    if backbone.has_imagenet:
        files[GATE] = _once(
            where / f"gate_int8-{tag}.tflite",
            lambda path: convert(_gate(backbone), None, path, features),
        )
    for path in files.values():
        os.utime(path)  # recently used: pruned last
    prune_int8(home, backbone.identity, KEEP_INT8_SETS)
    return files


def prune_int8(home: Path, backbone_identity: str, keep: int) -> None:
    """Keep the `keep` most recently used int8 sets of a backbone in BREEDBOT_HOME, drop the rest.

    Versions hold their own links, so a dropped set costs only a later retrain on that data a
    new calibration.
    """
    used: dict[str, float] = {}
    files = list(home_dir(home, backbone_identity).glob("*_int8-*.tflite"))
    for path in files:
        with contextlib.suppress(FileNotFoundError):  # another worker pruning at the same time
            tag = path.stem.rsplit("-", 1)[1]
            used[tag] = max(used.get(tag, 0.0), path.stat().st_mtime)
    stale = set(sorted(used, key=used.__getitem__, reverse=True)[keep:])
    for path in files:
        if path.stem.rsplit("-", 1)[1] in stale:
            path.unlink(missing_ok=True)


@dataclass
class Photos:
    """Encoded photos of a split, their SHA-256 and their float backbone features."""

    sources: list[bytes]
    sha256s: list[str]
    features: np.ndarray  # [N, D]


def export_version(
    backbone: backbones.Backbone,
    home: Path,
    kernel: np.ndarray,
    bias: np.ndarray,
    directory: Path,
    calibration: Photos,
    test: Photos,
    test_labels: np.ndarray,
    bottleneck_dir: Path,
    *,
    num_threads: int | None = None,
) -> dict:
    """Write a version's float and int8 LiteRT files, measure both on its test split, decide.

    The calibration photos are the version's own training images; the int8 head and gate are
    calibrated on their float features. Only the head is converted here: the backbone and gate
    files come from BREEDBOT_HOME (see `int8_files`). Test accuracy runs each precision's head file
    on its backbone file's features: the float ones are the retrain's bottlenecks (made by the same
    float file on a CPU), the int8 ones are cached in `bottleneck_dir` like them, keyed by the
    int8 file's content. The returned dict goes into metrics.json; its "served" entry is the
    precision to serve.
    """
    if len(calibration.sources) == 0:
        raise ValueError("int8 calibration needs at least one photo")
    started = time.perf_counter()
    directory = Path(directory)
    shared = {(BACKBONE, FLOAT): features_file(backbone, home)}
    gate = gate_file(backbone, home)
    if gate is not None:
        shared[GATE, FLOAT] = gate
    size = backbone.image_size
    tag = calibration_tag(calibration.sha256s, size)
    int8 = int8_files(
        backbone, home, tag, lambda: decode_all(calibration.sources, size), calibration.features
    )
    shared.update({(part, INT8): path for part, path in int8.items()})
    files = {
        (part, p): place(path, directory / part_file(part, p)) for (part, p), path in shared.items()
    }
    head = dense_graph(kernel, bias, "logits")
    for p, inputs in ((FLOAT, None), (INT8, calibration.features)):
        files[HEAD, p] = convert(head, None, directory / part_file(HEAD, p), inputs)
    convert_seconds = time.perf_counter() - started
    int8_features = _cached_features(int8[BACKBONE], size, test, bottleneck_dir, num_threads)
    test_features = {FLOAT: test.features, INT8: int8_features.vectors[ORIGINAL.key()]}
    guess = {
        p: Runner(files[HEAD, p], num_threads=num_threads, batch_size=FEATURE_BATCH)(x)[
            "logits"
        ].argmax(1)
        for p, x in test_features.items()
    }
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
        "calibration_images": len(calibration.sources),
        "int8_features": {"computed": int8_features.computed, "cached": int8_features.cached},
        "convert_seconds": round(convert_seconds, 3),
        **{
            p: {
                "files": [f"{VERSION_DIR}/{path.name}" for (_, q), path in files.items() if q == p],
                "bytes": sum(path.stat().st_size for (_, q), path in files.items() if q == p),
                "test_accuracy": round(accuracy[p], 4),
            }
            for p in PRECISIONS
        },
    }


def _cached_features(
    model: Path, image_size: int, photos: Photos, bottleneck_dir: Path, num_threads: int | None
) -> Extraction:
    """Features of `photos` through a backbone file, cached under the file's content hash."""
    identity = "litert:" + hashlib.sha256(model.read_bytes()).hexdigest()[:16]
    ex = extract(
        lazy_features(lambda: Runner(model, num_threads=num_threads, batch_size=BATCH_SIZES[INT8])),
        identity,
        photos.features.shape[1],
        photos.sources,
        photos.sha256s,
        [[ORIGINAL]] * len(photos.sources),
        bottleneck_dir,
        image_size=image_size,
        batch_size=EVAL_BATCH,
    )
    if ex.failures:
        raise ValueError(f"test photo no longer decodes: {ex.failures[0][1]}")
    return ex


def lazy_features(make: Callable[[], Runner]) -> Callable[[np.ndarray], np.ndarray]:
    """A backbone Runner's `feature_vector` as a function; `make` runs on the first call only,
    so a run served wholly from the bottleneck cache builds (or converts) nothing."""
    runner = functools.cache(make)
    return lambda images: runner()(images)["feature_vector"]


def features_runner(
    backbone: backbones.Backbone,
    home: Path,
    *,
    num_threads: int | None = None,
    batch_size: int = 1,
) -> Runner:
    """The LiteRT float twin of `backbone.features`, converted once into BREEDBOT_HOME."""
    return Runner(features_file(backbone, home), num_threads=num_threads, batch_size=batch_size)


def prepare_zero_shot(backbone_name: str, home: Path) -> Path:
    """Convert a named backbone's zero-shot model (features and gate, float) into BREEDBOT_HOME,
    where `model.runtime` loads it without TensorFlow; a no-op once done."""
    folder = zero_shot_dir(home, backbone_name)
    if zero_shot_ready(home, backbone_name):
        return folder
    backbone = backbones.load_backbone(backbone_name, home)
    gate = gate_file(backbone, home)
    if gate is None:
        raise ValueError(f"{backbone.handle} has no ImageNet classifier to answer zero-shot with")
    folder.mkdir(parents=True, exist_ok=True)
    files = {BACKBONE: features_file(backbone, home), GATE: gate}
    for path in files.values():
        place(path, folder / path.name)
    index = {part: path.name for part, path in files.items()}
    write_atomically(folder / ZERO_SHOT_FILE, json.dumps(index).encode())
    return folder
