"""The LiteRT engine against the TensorFlow one, on real photos with the real backbone."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from model import backbones, data, features, litert, train
from model.hparams import HParams
from model.predict import load_classifier
from model.runtime import imagenet
from model.runtime import images as imagelib
from model.runtime import litert as runtime_litert
from model.runtime.classifier import Classifier, Prediction

pytestmark = pytest.mark.slow


def _photos(datasets: Path, step: int) -> list[Path]:
    """Every `step`-th photo of pets-dev and of flowers-dev (pets and non-pets)."""
    pets = sorted((datasets / "pets-dev").glob("*/*.jpg"))[::step]
    flowers = sorted((datasets / "flowers-dev").glob("*/*.jpg"))[::step]
    return pets + flowers


def _assert_same_answers(a: list[Prediction], b: list[Prediction]) -> None:
    """Float engines: same ranking, probabilities within 1e-3, same pet-gate answer."""
    assert len(a) == len(b)
    for pa, pb in zip(a, b, strict=True):
        assert pa.top_k[0].label == pb.top_k[0].label
        got = {g.label: g.probability for g in pb.top_k}
        for g in pa.top_k:
            assert abs(g.probability - got.get(g.label, 0.0)) < 1e-3
        assert pa.is_pet == pb.is_pet
        assert abs(pa.pet_probability - pb.pet_probability) < 1e-3
        assert pa.imagenet_label == pb.imagenet_label


@pytest.fixture(scope="module")
def backbone(breedbot_home: Path) -> backbones.Backbone:
    return backbones.load_backbone(backbones.DEFAULT_BACKBONE, breedbot_home)


@pytest.fixture(scope="module")
def pets_version(datasets: Path, breedbot_home: Path, tmp_path_factory) -> Path:
    """A version on pets-dev with a held-out test split (LiteRT extraction on this CPU)."""
    out = tmp_path_factory.mktemp("engine") / "pets"
    hp = HParams(testing_percentage=10, tfhub_module=backbones.DEFAULT_BACKBONE)
    train.retrain(datasets / "pets-dev", out, hp, home=breedbot_home, engine="litert")
    return out


def test_auto_engine_is_litert_without_a_gpu() -> None:
    assert runtime_litert.resolve_engine("auto") == "litert"  # CI and this machine have no GPU
    assert runtime_litert.resolve_engine("tf") == "tf"
    with pytest.raises(ValueError, match="engine must be one of"):
        runtime_litert.resolve_engine("onnx")


def test_litert_features_match_tensorflow_within_float_noise(
    backbone: backbones.Backbone, datasets: Path, breedbot_home: Path
) -> None:
    """The measurement behind sharing one bottleneck cache between the engines."""
    files = sorted((datasets / "pets-dev").glob("*/*.jpg"))[::15]
    pixels = imagelib.to_float(np.stack([imagelib.decode_image(f.read_bytes()) for f in files]))
    reference = train.extractor(backbone, "tf")(pixels)
    lite = train.extractor(backbone, "litert", breedbot_home)(pixels)
    relative = np.linalg.norm(lite - reference, axis=1) / np.linalg.norm(reference, axis=1)
    assert relative.max() < 1e-4
    # Converted once into BREEDBOT_HOME and reused, not rewritten.
    converted = litert.home_dir(breedbot_home, backbone.identity) / litert.FEATURES_FILE
    stamp = converted.stat().st_mtime_ns
    litert.features_runner(backbone, breedbot_home)
    assert converted.stat().st_mtime_ns == stamp


def test_runner_chunks_give_the_same_vectors(
    backbone: backbones.Backbone, datasets: Path, breedbot_home: Path
) -> None:
    """Full chunks plus a one-by-one remainder equal per-image runs."""
    files = sorted((datasets / "flowers-dev" / "roses").iterdir())[:11]
    pixels = imagelib.to_float(np.stack([imagelib.decode_image(f.read_bytes()) for f in files]))
    single = litert.features_runner(backbone, breedbot_home)
    chunked = litert.Runner(single.path, batch_size=4)
    one = single(pixels)["feature_vector"]
    many = chunked(pixels)["feature_vector"]
    assert one.shape == many.shape == (11, backbone.feature_dim)
    np.testing.assert_allclose(many, one, rtol=1e-4, atol=1e-5)
    assert chunked(pixels[:0])["feature_vector"].shape == (0, backbone.feature_dim)


def test_zero_shot_engines_agree(datasets: Path, breedbot_home: Path) -> None:
    tf_clf = load_classifier(home=breedbot_home, engine="tf")
    lite = load_classifier(home=breedbot_home, engine="litert")
    assert (tf_clf.engine, lite.engine) == ("tf", "litert-float")
    blobs = [f.read_bytes() for f in _photos(datasets, 3)]
    _assert_same_answers(tf_clf.predict(blobs), lite.predict(blobs))
    with pytest.raises(ValueError, match="no int8"):
        load_classifier(home=breedbot_home, engine="litert", precision="int8")


def test_version_ships_litert_files_and_records_the_decision(pets_version: Path) -> None:
    report = json.loads((pets_version / train.METRICS_FILE).read_text())
    assert report["extraction_engine"] == "litert"
    lite = report["litert"]
    for precision in litert.PRECISIONS:
        paths = [pets_version / name for name in lite[precision]["files"]]
        parts = (litert.BACKBONE, litert.HEAD, litert.GATE)
        expected = sorted(litert.part_file(part, precision) for part in parts)
        assert sorted(p.name for p in paths) == expected
        assert sum(p.stat().st_size for p in paths) == lite[precision]["bytes"]
    assert lite["int8"]["bytes"] < lite["float"]["bytes"] / 3
    assert lite["calibration_images"] == litert.CALIBRATION_IMAGES
    assert lite["n_test"] == report["n_test"]
    # The float LiteRT classifier reproduces the accuracy measured on the bottlenecks.
    assert lite["float"]["test_accuracy"] == pytest.approx(report["test_accuracy"], abs=1e-4)
    expected = litert.int8_decision(
        lite["n_test"],
        lite["float"]["test_accuracy"],
        lite["int8"]["test_accuracy"],
        lite["int8_agreement"],
    )
    assert lite["served"] == expected
    assert load_classifier(pets_version).engine == f"litert-{expected}"


def test_backbone_conversions_are_shared_and_keyed_by_calibration_photos(
    pets_version: Path, backbone: backbones.Backbone, breedbot_home: Path, datasets: Path
) -> None:
    """A version links the backbone files of BREEDBOT_HOME; int8 is made once per photo set."""
    home_files = litert.home_dir(breedbot_home, backbone.identity)
    version_files = pets_version / litert.VERSION_DIR
    linked = version_files / litert.part_file(litert.BACKBONE, litert.FLOAT)
    assert linked.stat().st_ino == (home_files / litert.FEATURES_FILE).stat().st_ino
    int8 = version_files / litert.part_file(litert.BACKBONE, litert.INT8)
    (source,) = [p for p in home_files.glob("features_int8-*") if p.samefile(int8)]
    sources = [f.read_bytes() for f in sorted((datasets / "flowers-dev" / "tulips").iterdir())[:2]]
    tag = litert.calibration_tag([hashlib.sha256(s).hexdigest() for s in sources], 224)
    decoded: list[int] = []

    def photos() -> np.ndarray:
        decoded.append(len(sources))
        return features.decode_all(sources)

    vectors = litert.features_runner(backbone, breedbot_home)(imagelib.to_float(photos()))
    made = litert.int8_files(backbone, breedbot_home, tag, photos, vectors["feature_vector"])
    assert made[litert.BACKBONE] != source and made[litert.BACKBONE].is_file()
    assert len(decoded) == 2  # decoded again to calibrate the conversion
    # Reused, not converted again (a conversion lands by rename, as a new inode), not decoded.
    inodes = {part: path.stat().st_ino for part, path in made.items()}
    again = litert.int8_files(backbone, breedbot_home, tag, photos, vectors["feature_vector"])
    assert {part: path.stat().st_ino for part, path in again.items()} == inodes
    assert len(decoded) == 2
    assert set(made) == {litert.BACKBONE, litert.GATE}


def test_int8_sets_are_pruned_least_recently_used_first(tmp_path: Path) -> None:
    where = litert.home_dir(tmp_path, "some-backbone")
    where.mkdir(parents=True)
    (where / litert.FEATURES_FILE).write_bytes(b"float")
    for age, tag in enumerate(["d", "c", "b", "a"]):  # "a" is the oldest
        for part in ("features", "gate"):
            path = where / f"{part}_int8-{tag}.tflite"
            path.write_bytes(b"int8")
            os.utime(path, (1e9 - age * 100, 1e9 - age * 100))
    litert.prune_int8(tmp_path, "some-backbone", keep=2)
    assert sorted(p.name for p in where.iterdir()) == [
        "features_float.tflite",
        "features_int8-c.tflite",
        "features_int8-d.tflite",
        "gate_int8-c.tflite",
        "gate_int8-d.tflite",
    ]
    litert.prune_int8(tmp_path, "some-backbone", keep=0)
    assert [p.name for p in where.iterdir()] == ["features_float.tflite"]


def test_int8_decision_reproduced_through_predict(
    pets_version: Path, datasets: Path, breedbot_home: Path
) -> None:
    """Recompute the hidden-split numbers from scratch through predict() and check the rule."""
    dataset = data.load_dataset(datasets / "pets-dev")
    test = data.split_dataset(dataset, 10, 10)["test"]
    blobs = [im.path.read_bytes() for im in test]
    top1 = {
        precision: [
            p.top_k[0].label
            for p in load_classifier(pets_version, engine="litert", precision=precision).predict(
                blobs, top_k=1
            )
        ]
        for precision in litert.PRECISIONS
    }
    truth = [im.label for im in test]
    accuracy = {
        k: np.mean([a == b for a, b in zip(v, truth, strict=True)]) for k, v in top1.items()
    }
    agreement = np.mean([a == b for a, b in zip(top1["float"], top1["int8"], strict=True)])
    lite = json.loads((pets_version / train.METRICS_FILE).read_text())["litert"]
    assert accuracy["float"] == pytest.approx(lite["float"]["test_accuracy"], abs=1e-4)
    assert accuracy["int8"] == pytest.approx(lite["int8"]["test_accuracy"], abs=1e-4)
    assert agreement == pytest.approx(lite["int8_agreement"], abs=1e-4)
    # Whatever was decided, int8 on real photos stays close to float on this backbone.
    assert agreement >= 0.9 and accuracy["int8"] >= accuracy["float"] - 0.05


def test_int8_decision_rule() -> None:
    assert litert.int8_decision(100, 0.90, 0.89, 0.98) == "int8"  # exactly at both limits
    assert litert.int8_decision(100, 0.90, 0.95, 0.99) == "int8"
    assert litert.int8_decision(100, 0.90, 0.885, 1.0) == "float"  # 1.5 points lost
    assert litert.int8_decision(100, 0.90, 0.90, 0.97) == "float"  # agrees too rarely
    assert litert.int8_decision(0, 0.0, 0.0, 0.0) == "float"  # no hidden split: no evidence


def test_version_engines_agree(pets_version: Path, datasets: Path) -> None:
    """TF SavedModel and LiteRT float: same top-1, probabilities within 1e-3."""
    blobs = [f.read_bytes() for f in _photos(datasets, 3)]
    tf_clf = load_classifier(pets_version, engine="tf")
    lite = load_classifier(pets_version, engine="litert", precision="float")
    _assert_same_answers(tf_clf.predict(blobs), lite.predict(blobs))


def test_litert_classifier_is_thread_safe(pets_version: Path, datasets: Path) -> None:
    """Threads sharing one classifier each get their own interpreter and the right answers."""
    clf = load_classifier(pets_version, engine="litert", num_threads=1)
    blobs = [f.read_bytes() for f in _photos(datasets, 20)]
    expected = [p.top_k[0].label for p in clf.predict(blobs, top_k=1)]
    results: dict[int, list[str]] = {}

    def work(k: int, c: Classifier = clf) -> None:
        order = blobs[k:] + blobs[:k]  # each thread sees different batches
        labels = [p.top_k[0].label for p in c.predict(order, top_k=1)]
        results[k] = labels[-k:] + labels[:-k] if k else labels

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(results[k] == expected for k in range(4))


def test_old_version_without_litert_files_is_served_by_tf(
    pets_version: Path, tmp_path: Path
) -> None:
    old = tmp_path / "old"
    shutil.copytree(pets_version, old, ignore=shutil.ignore_patterns(litert.VERSION_DIR))
    report = json.loads((old / train.METRICS_FILE).read_text())
    del report["litert"]
    (old / train.METRICS_FILE).write_text(json.dumps(report))
    assert load_classifier(old, engine="litert").engine == "tf"


def test_cache_is_shared_between_engines(
    pets_version: Path, datasets: Path, breedbot_home: Path, backbone: backbones.Backbone
) -> None:
    """Vectors cached by the LiteRT retrain are reused by a TensorFlow run: nothing recomputed."""
    items = data.load_dataset(datasets / "pets-dev").images[:20]
    ex = train.bottlenecks(
        backbone,
        items,
        [[features.ORIGINAL]] * len(items),
        breedbot_home / "bottlenecks",
        embed=train.extractor(backbone, "tf"),
    )
    assert (ex.computed, ex.cached) == (0, len(items))


def test_pet_gate_answers_real_pets_and_refuses_flowers(pets_version: Path, datasets: Path) -> None:
    """The gate through predict(): ImageNet's carnivore mass, then "not sure, maybe X"."""
    clf = load_classifier(pets_version, engine="litert", precision="float")
    uncovered = [
        p
        for p in sorted((datasets / "pets-dev").glob("*/*.jpg"))
        if p.parent.name not in imagenet.OXFORD_TO_IMAGENET
    ]
    flowers = sorted((datasets / "flowers-dev").glob("*/*.jpg"))
    pets = clf.predict([p.read_bytes() for p in uncovered], top_k=1)
    others = clf.predict([p.read_bytes() for p in flowers], top_k=1)
    assert np.mean([p.is_pet for p in pets]) >= 0.97  # breeds ImageNet has no class for
    assert np.mean([p.is_pet for p in others]) <= 0.02
    unsure = [p for p in pets + others if p.pet_unsure]
    assert unsure and all(p.is_pet and p.top_k[0].probability >= 0.5 for p in unsure)
    assert all(p.pet_probability < 0.5 for p in unsure)
