"""The `breedbot` ML commands, run through their real entry point on real photos."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter

from model import cli
from model.predict import load_classifier
from model.runtime import images, litert

pytestmark = pytest.mark.slow

SCORE_LINE = re.compile(r"^\S.* \(score = [01]\.\d{5}\)$")


@pytest.fixture(scope="module")
def cli_env(breedbot_home: Path, monkeypatch_module: pytest.MonkeyPatch) -> Path:
    monkeypatch_module.setenv("BREEDBOT_HOME", str(breedbot_home))
    return breedbot_home


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


@pytest.fixture(scope="module")
def flowers_model(cli_env: Path, datasets: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "flowers"
    argv = ["retrain", "--image_dir", str(datasets / "flowers-dev"), "--output_graph", str(out)]
    argv += ["--architecture", "efficientnet_lite0"]
    assert cli.main([*argv, "--how_many_training_steps", "300"]) == 0
    return out


def test_retrain_prints_final_accuracy_and_cache_use(
    flowers_model: Path, datasets: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    argv = ["retrain", "--image_dir", str(datasets / "flowers-dev")]
    argv += ["--architecture", "efficientnet_lite0"]
    out_dir = tmp_path / "again"
    summaries = tmp_path / "tb"
    labels = tmp_path / "retrained_labels.txt"
    code = cli.main(
        [
            *argv,
            "--output_graph",
            str(out_dir),
            "--how_many_training_steps",
            "300",
            "--summaries_dir",
            str(summaries),
            "--output_labels",
            str(labels),
            "--print_misclassified_test_images",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert re.search(r"^Bottlenecks: 0 computed, \d+ from cache$", out, re.M)
    assert re.search(
        r"^Cross-validated accuracy = \d+\.\d% ± \d+\.\d% \(5 folds, N=200\)", out, re.M
    )
    assert "=== MISCLASSIFIED TEST IMAGES ===" in out
    assert labels.read_text().split()[0] == "daisy"
    assert list(summaries.glob("train/events.out.tfevents.*"))


def test_label_image_prints_top5(
    flowers_model: Path, datasets: Path, capsys: pytest.CaptureFixture
) -> None:
    photo = sorted((datasets / "flowers-dev" / "sunflowers").iterdir())[0]
    assert cli.main(["label-image", "--graph", str(flowers_model), "--image", str(photo)]) == 0
    lines = capsys.readouterr().out.splitlines()
    scored = [line for line in lines if SCORE_LINE.match(line)]
    assert len(scored) == 5
    assert scored[0].startswith("sunflowers (score = ")
    scores = [float(line.rsplit("= ", 1)[1][:-1]) for line in scored]
    assert scores == sorted(scores, reverse=True)


def test_label_image_of_a_litert_version_leaves_tensorflow_out(
    flowers_model: Path, cli_env: Path, datasets: Path
) -> None:
    """`breedbot label-image --graph` on a LiteRT-served version, in a fresh process: the labels
    print and TensorFlow never loads (it cost ~8 CPU s and ~850 MB per call)."""
    if litert.resolve_engine("auto") != "litert":
        pytest.skip("where a GPU is, label-image serves through TensorFlow")
    photo = sorted((datasets / "pets-dev" / "pug").glob("*.jpg"))[0]
    argv = ["label-image", "--graph", str(flowers_model), "--image", str(photo)]
    code = (
        "import sys\nfrom ops.cli import main\n"
        f"code = main({argv!r})\n"
        "print('tensorflow loaded:', 'tensorflow' in sys.modules)\nsys.exit(code)\n"
    )
    env = {**os.environ, "BREEDBOT_HOME": str(cli_env)}
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    lines = result.stdout.splitlines()
    assert len([line for line in lines if SCORE_LINE.match(line)]) == 5
    assert lines[-1] == "tensorflow loaded: False"


def test_label_image_default_model_knows_breeds(
    cli_env: Path, datasets: Path, capsys: pytest.CaptureFixture
) -> None:
    photo = sorted((datasets / "pets-dev" / "pug").iterdir())[0]
    assert cli.main(["label-image", "--image", str(photo)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].lower().startswith("pug (score = ")
    assert "# cat or dog: yes" in out


def test_label_image_reports_a_bad_file(
    cli_env: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    bad = tmp_path / "cat.jpg"
    bad.write_text("this is not a picture")
    assert cli.main(["label-image", "--image", str(bad)]) == 1
    assert "error:" in capsys.readouterr().out


def test_eval_json(flowers_model: Path, datasets: Path, capsys: pytest.CaptureFixture) -> None:
    argv = ["eval", "--graph", str(flowers_model), "--image_dir", str(datasets / "flowers-dev")]
    assert cli.main([*argv, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["n"] == 200
    assert 0.8 <= report["accuracy"] <= 1.0
    assert len(report["confusion_matrix"]) == 5


def test_retrain_refuses_a_single_class(
    cli_env: Path, datasets: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    one = tmp_path / "one"
    (one / "daisy").mkdir(parents=True)
    for f in sorted((datasets / "flowers-dev" / "daisy").iterdir())[:5]:
        (one / "daisy" / f.name).write_bytes(f.read_bytes())
    code = cli.main(["retrain", "--image_dir", str(one), "--output_graph", str(tmp_path / "o")])
    assert code == 1
    assert "class" in capsys.readouterr().err


def test_tflite_export_agrees_with_saved_model(flowers_model: Path, datasets: Path) -> None:
    assert cli.main(["export", "--graph", str(flowers_model), "--tflite"]) == 0
    files = sorted((datasets / "flowers-dev").glob("*/*.jpg"))[::8]
    pixels = images.to_float(np.stack([images.decode_image(f.read_bytes()) for f in files]))
    reference = load_classifier(flowers_model).predict_pixels(pixels)["probabilities"].argmax(1)
    for name in ("model_float.tflite", "model_int8.tflite"):
        interp = Interpreter(model_path=str(flowers_model / name), num_threads=2)
        runner = interp.get_signature_runner("classify_images")
        top1 = [runner(images=p[None])["probabilities"].argmax() for p in pixels]
        agreement = float(np.mean(np.array(top1) == reference))
        assert agreement >= (1.0 if name == "model_float.tflite" else 0.9), name
