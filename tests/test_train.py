"""Retrain end to end on real photos with the real EfficientNet-Lite0 backbone."""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import threading
import time
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter
from PIL import Image

from model import backbones, crossval, data, export, features, serving, train
from model.hparams import DEFAULT_BACKBONE, HParams
from model.predict import load_classifier
from model.runtime import images as imagelib

pytestmark = pytest.mark.slow

# One backbone: `auto` (the default) has its own test below.
FAST = HParams(how_many_training_steps=300, eval_step_interval=50, tfhub_module=DEFAULT_BACKBONE)


def _copy_classes(src: Path, dst: Path, classes: list[str], per_class: int) -> Path:
    for c in classes:
        (dst / c).mkdir(parents=True)
        for f in sorted((src / c).iterdir())[:per_class]:
            shutil.copy(f, dst / c / f.name)
    return dst


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This module's own bottleneck cache: other modules retrain flowers-dev too."""
    return tmp_path_factory.mktemp("bottlenecks")


@pytest.fixture(scope="module")
def flowers_run(
    datasets: Path, breedbot_home: Path, cache: Path, tmp_path_factory: pytest.TempPathFactory
) -> train.TrainResult:
    out = tmp_path_factory.mktemp("runs") / "flowers"
    seen: list[tuple[str, int, int]] = []
    result = train.retrain(
        datasets / "flowers-dev",
        out,
        FAST,
        home=breedbot_home,
        bottleneck_dir=cache,
        progress=lambda stage, done, total, acc: seen.append((stage, done, total)),
    )
    result.metrics["_progress"] = seen
    return result


def test_retrain_writes_a_servable_folder(flowers_run: train.TrainResult) -> None:
    out = flowers_run.output_dir
    assert (out / "saved_model" / "saved_model.pb").is_file()
    assert (out / "retrained_labels.txt").read_text().split() == [
        "daisy",
        "dandelion",
        "roses",
        "sunflowers",
        "tulips",
    ]
    assert (out / "confusion_matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert list((out / "logs" / "train").glob("events.out.tfevents.*"))
    assert list((out / "logs" / "validation").glob("events.out.tfevents.*"))
    m = json.loads((out / "metrics.json").read_text())
    for key in (
        "test_accuracy",
        "validation_accuracy",
        "per_class",
        "confusion_matrix",
        "misclassified",
        "training_seconds",
        "backbone",
        "dataset_fingerprint",
    ):
        assert key in m
    # No test split asked for: every photo trains the layer and 5-fold CV gives the accuracy.
    assert m["accuracy_source"] == "cross_validation" and m["n_test"] == 0 and m["test"] is None
    assert m["n_train"] == m["n_validation"] == 200
    cv = m["cross_validation"]
    assert cv["k"] == 5 and len(cv["fold_accuracy"]) == 5 and 0 < cv["std"] < 0.1
    assert m["test_accuracy"] == cv["accuracy"] == m["validation_accuracy"]
    assert m["best_step"] == cv["best_step"] <= FAST.how_many_training_steps
    # The confusion matrix and the mistakes are the out-of-fold answers: every photo once.
    assert sum(map(sum, m["confusion_matrix"])) == 200
    wrong = 200 - sum(m["confusion_matrix"][i][i] for i in range(5))
    assert len(m["misclassified"]) == wrong
    assert cv["accuracy"] == pytest.approx(1 - wrong / 200)
    assert m["test_accuracy"] >= 0.8  # a linear probe on these features reaches ~0.87
    stages = {s for s, _, _ in flowers_run.metrics["_progress"]}
    # Each stage but saving names the backbone it runs on.
    handle = FAST.tfhub_module
    assert {f"bottlenecks@{handle}", f"training@{handle}", f"final@{handle}", "saving"} <= stages
    assert not list(out.parent.glob(".flowers.tmp-*"))


def test_second_run_extracts_nothing(
    flowers_run: train.TrainResult, datasets: Path, breedbot_home: Path, cache: Path, tmp_path: Path
) -> None:
    assert flowers_run.bottlenecks_computed > 0
    again = train.retrain(
        datasets / "flowers-dev", tmp_path / "again", FAST, home=breedbot_home, bottleneck_dir=cache
    )
    assert again.bottlenecks_computed == 0
    assert again.bottlenecks_cached == flowers_run.bottlenecks_computed
    # The int8 backbone's features of the test photos are cached too.
    assert again.metrics["litert"]["int8_features"]["computed"] == 0
    # Same data, same seed: the same model, whose SavedModel now comes from the template.
    assert again.test_accuracy == flowers_run.test_accuracy
    np.testing.assert_array_equal(
        again.metrics["confusion_matrix"], flowers_run.metrics["confusion_matrix"]
    )


def test_saved_model_from_a_template_serves_its_own_head(
    datasets: Path, breedbot_home: Path, tmp_path: Path
) -> None:
    """Two heads of one shape: the second SavedModel is the first's graph with the new weights."""
    backbone = backbones.load_backbone(backbones.DEFAULT_BACKBONE, breedbot_home)
    home = tmp_path / "home"  # no template yet
    files = sorted((datasets / "pets-dev").glob("*/*.jpg"))[::60]
    pixels = imagelib.to_float(features.decode_all(files))
    vectors = backbone.features(pixels)
    rng = np.random.default_rng(0)
    for name in ("first", "second"):
        kernel = rng.normal(0, 0.05, (backbone.feature_dim, 3)).astype(np.float32)
        bias = rng.normal(0, 1, 3).astype(np.float32)
        path = tmp_path / name / train.SAVED_MODEL_DIR
        serving.save_retrained(backbone, kernel, bias, list("abc"), path, home)
        loaded = tf.saved_model.load(str(path))
        got = loaded.signatures["classify_images"](images=tf.constant(pixels))
        logits = vectors @ kernel + bias
        want = np.exp(logits - logits.max(1, keepdims=True))
        want /= want.sum(1, keepdims=True)
        np.testing.assert_allclose(got["probabilities"].numpy(), want, atol=1e-5)
        from_bytes = loaded.signatures["serving_default"](
            image_bytes=tf.constant([f.read_bytes() for f in files])
        )["probabilities"].numpy()
        assert np.mean(from_bytes.argmax(1) == want.argmax(1)) >= 0.9  # TF decodes, not Pillow
        assert tf.saved_model.experimental.read_fingerprint(str(path)).checkpoint_hash
    (template,) = (home / serving.TEMPLATES_DIR).iterdir()
    assert (template / "saved_model.pb").read_bytes() == (path / "saved_model.pb").read_bytes()
    # The TFLite converter reads the checkpoint through the C++ loader: it finds the new head.
    (float_file, _) = export.export_tflite(tmp_path / "second")
    runner = Interpreter(model_path=str(float_file)).get_signature_runner("classify_images")
    lite = np.concatenate([runner(images=p[None])["probabilities"] for p in pixels])
    np.testing.assert_allclose(lite, want, atol=1e-4)
    # A damaged template (here a truncated checkpoint) gives way to a full save that replaces it.
    (data_file,) = (template / "variables").glob("variables.data-*")
    data_file.write_bytes(data_file.read_bytes()[:1000])
    again = tmp_path / "third" / train.SAVED_MODEL_DIR
    serving.save_retrained(backbone, kernel, bias, list("abc"), again, home)
    loaded = tf.saved_model.load(str(again))
    got = loaded.signatures["classify_images"](images=tf.constant(pixels))["probabilities"]
    np.testing.assert_allclose(got.numpy(), want, atol=1e-5)
    (rebuilt,) = (home / serving.TEMPLATES_DIR).iterdir()
    assert (rebuilt / "variables" / data_file.name).stat().st_size > 1000
    # Pruning keeps no template here, drops a crash's hour-old copy, spares a live one.
    for name, age in ((".left-by-a-crash", 7200), (".being-written", 5)):
        (home / serving.TEMPLATES_DIR / name).mkdir()
        os.utime(home / serving.TEMPLATES_DIR / name, (time.time() - age,) * 2)
    serving.prune_templates(home, keep=0)
    assert [p.name for p in (home / serving.TEMPLATES_DIR).iterdir()] == [".being-written"]


def test_cache_is_keyed_by_content(
    flowers_run: train.TrainResult, datasets: Path, breedbot_home: Path, cache: Path, tmp_path: Path
) -> None:
    """Renamed files reuse vectors; a replaced image and a corrupt entry are recomputed."""
    src = datasets / "flowers-dev"
    data_dir = tmp_path / "moved"
    for c in ("daisy", "roses", "tulips"):
        (data_dir / f"renamed_{c}").mkdir(parents=True)
        for i, f in enumerate(sorted((src / c).iterdir())[:8]):
            shutil.copy(f, data_dir / f"renamed_{c}" / f"photo_{i}.jpg")
    hp = replace(FAST, how_many_training_steps=50, flip_left_right=False)
    first = train.retrain(data_dir, tmp_path / "a", hp, home=breedbot_home, bottleneck_dir=cache)
    assert first.bottlenecks_computed == 0  # same bytes as in flowers-dev, other names

    # Replace one photo by new bytes under the same name: its old vector must not be reused.
    victim = data_dir / "renamed_daisy" / "photo_0.jpg"
    Image.open(victim).rotate(90).save(victim, quality=80)
    # Corrupt one cached vector.
    other = sorted((data_dir / "renamed_roses").iterdir())[0]
    sha = hashlib.sha256(other.read_bytes()).hexdigest()
    backbone_id = first.metrics["backbone"]["identity"]
    entry = features.vector_path(
        cache
        / features.namespace(
            backbone_id, features.ORIGINAL, first.metrics["backbone"]["image_size"]
        ),
        sha,
    )
    entry.write_bytes(b"not a numpy file")
    second = train.retrain(data_dir, tmp_path / "b", hp, home=breedbot_home, bottleneck_dir=cache)
    assert second.bottlenecks_computed == 2
    assert features.read_vector(entry, 1280) is not None


def test_concurrent_writers_leave_a_whole_file(tmp_path: Path) -> None:
    path = tmp_path / "ab" / "ab.npy"
    vecs = [np.full(1280, i, np.float32) for i in range(8)]
    threads = [threading.Thread(target=features.write_vector, args=(path, v)) for v in vecs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got = features.read_vector(path, 1280)
    assert got is not None and len(set(got.tolist())) == 1
    assert list(path.parent.iterdir()) == [path]


def test_accuracy_gate_writes_nothing(
    flowers_run: train.TrainResult, datasets: Path, breedbot_home: Path, tmp_path: Path
) -> None:
    """Shuffled labels cannot reach 95 %: the gate refuses and leaves no folder behind."""
    files = sorted((datasets / "flowers-dev").glob("*/*.jpg"))
    random.Random(0).shuffle(files)
    for i, f in enumerate(files[:60]):
        dst = tmp_path / "noise" / f"class{i % 3}"
        dst.mkdir(parents=True, exist_ok=True)
        shutil.copy(f, dst / f.name)
    hp = replace(FAST, how_many_training_steps=100, assert_accuracy_at_least=0.95)
    with pytest.raises(train.AccuracyGateError, match=r"below the required 95\.0%"):
        train.retrain(tmp_path / "noise", tmp_path / "out", hp, home=breedbot_home)
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".out.tmp-*"))


def test_csv_zip_and_distortions(datasets: Path, breedbot_home: Path, tmp_path: Path) -> None:
    """A zipped Kaggle labels.csv upload trains; distorted copies are cached too."""
    src = datasets / "csv-sample"
    archive = tmp_path / "upload.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.write(src / "labels.csv", "dogs/labels.csv")
        for f in sorted((src / "train").iterdir()):
            z.write(f, f"dogs/train/{f.name}")
    hp = replace(FAST, how_many_training_steps=100, random_crop=10, random_brightness=10)
    first = train.retrain(archive, tmp_path / "out", hp, home=breedbot_home)
    assert first.labels == ["Abyssinian", "Bengal", "american_bulldog"]
    n_train = first.metrics["n_train"]
    # original + flip + 2 distorted copies per training image.
    assert first.metrics["n_train_vectors"] == 4 * n_train
    second = train.retrain(archive, tmp_path / "out2", hp, home=breedbot_home)
    assert second.bottlenecks_computed == 0


def test_saved_model_signatures_agree_with_predict(
    flowers_run: train.TrainResult, datasets: Path
) -> None:
    """The bytes signature (TF decoding) and predict() (Pillow decoding) give the same top-1."""
    clf = load_classifier(flowers_run.output_dir)
    files = sorted((datasets / "flowers-dev").glob("*/*.jpg"))[::10]
    blobs = [f.read_bytes() for f in files]
    preds = clf.predict(blobs, top_k=1)
    loaded = tf.saved_model.load(str(flowers_run.output_dir / "saved_model"))
    out = loaded.signatures["serving_default"](image_bytes=tf.constant(blobs))
    tf_top = out["probabilities"].numpy().argmax(1)
    agree = np.mean([clf.labels[j] == p.top_k[0].label for j, p in zip(tf_top, preds, strict=True)])
    assert agree >= 0.95
    assert all(p.is_pet is False for p in preds)


def test_predict_survives_bad_bytes(flowers_run: train.TrainResult, datasets: Path) -> None:
    clf = load_classifier(flowers_run.output_dir)
    good = next((datasets / "flowers-dev" / "roses").iterdir()).read_bytes()
    preds = clf.predict([b"", good[: len(good) // 3], b"hello", good], top_k=3)
    assert [p.error for p in preds[:3]] == ["empty", "truncated", "not_an_image"]
    assert preds[3].error is None and preds[3].top_k[0].label == "roses"
    assert len(preds[3].top_k) == 3


def test_explicit_test_split_is_held_out_and_reported(
    flowers_run: train.TrainResult, datasets: Path, breedbot_home: Path, cache: Path, tmp_path: Path
) -> None:
    """retrain.py's --testing_percentage: a fixed content-hashed test split, CV on the rest."""
    hp = replace(FAST, testing_percentage=10)
    result = train.retrain(
        datasets / "flowers-dev", tmp_path / "held", hp, home=breedbot_home, bottleneck_dir=cache
    )
    m = result.metrics
    dataset = data.load_dataset(datasets / "flowers-dev")
    test = data.split_dataset(dataset, 10, 10)["test"]
    assert m["accuracy_source"] == "test_split" and m["n_test"] == len(test) >= 5
    assert m["n_train"] == 200 - len(test)
    assert result.test_accuracy == m["test"]["accuracy"] == m["test_accuracy"]
    assert sum(map(sum, m["test"]["confusion_matrix"])) == len(test)
    assert m["cross_validation"]["k"] == 5 and m["litert"]["n_test"] == len(test)
    # The held-out photos never trained the served layer: its answers on them match the report.
    clf = load_classifier(result.output_dir, engine="litert", precision="float")
    preds = clf.predict([im.path.read_bytes() for im in test], top_k=1)
    hits = np.mean([p.top_k[0].label == im.label for p, im in zip(preds, test, strict=True)])
    assert hits == pytest.approx(result.test_accuracy, abs=1.01 / len(test))  # a near tie at most


def test_folds_are_stratified_and_decided_by_content(datasets: Path) -> None:
    images = data.load_dataset(datasets / "pets-dev").images
    folds = crossval.stable_folds(images, 5)
    shuffled = list(images)
    random.Random(1).shuffle(shuffled)
    again = dict(zip(shuffled, crossval.stable_folds(shuffled, 5), strict=True))
    assert [again[im] for im in images] == folds.tolist()  # listing order does not matter
    for label in {im.label for im in images}:
        counts = np.bincount([f for f, im in zip(folds, images, strict=True) if im.label == label])
        assert counts.max() - counts[counts > 0].min() <= 1  # dealt round-robin within a class
    assert np.ptp(np.bincount(folds, minlength=5)) <= 37  # at most one photo per class apart


def test_auto_picks_the_backbone_that_cross_validates_best(
    datasets: Path, breedbot_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--architecture auto` on two cheap candidates: the choice and its reasons are recorded."""
    monkeypatch.setattr(train, "AUTO_CANDIDATES", ("efficientnet_lite0", "mobilenet_v1_100_224"))
    data_dir = _copy_classes(datasets / "flowers-dev", tmp_path / "data", ["daisy", "roses"], 15)
    hp = replace(FAST, tfhub_module="auto")
    result = train.retrain(data_dir, tmp_path / "out", hp, home=breedbot_home)
    auto = result.metrics["auto"]
    scores = {h: c["cv_accuracy"] for h, c in auto["candidates"].items()}
    assert list(scores) == ["efficientnet_lite0", "mobilenet_v1_100_224"]
    best = max(scores.values())
    first_close = next(h for h, acc in scores.items() if acc >= best - train.AUTO_TIE)
    assert auto["chosen"] == first_close == result.metrics["backbone"]["handle"]
    assert auto["candidates"]["mobilenet_v1_100_224"]["image_size"] == 224
    # The candidates saw originals only; the chosen one was then extracted with its mirrors.
    assert result.metrics["n_train_vectors"] == 2 * result.metrics["n_train"] == 60
    assert load_classifier(result.output_dir).predict(
        [next((data_dir / "roses").iterdir()).read_bytes()]
    )[0].top_k[0].label in {"daisy", "roses"}
