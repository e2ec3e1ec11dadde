"""Portable exports on real photos: ONNX Runtime and LiteRT answer as breedbot does.

A version per backbone `auto` can pick (Lite0, Lite1, Lite2), each trained briefly on a few
classes: what is checked is the export, not the accuracy.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from model import cli, export, train
from model.hparams import AUTO_CANDIDATES, HParams
from model.portable import README_FILE, PortableModel
from model.predict import load_classifier
from model.runtime.images import decode_image

pytestmark = pytest.mark.slow

CLASSES = ["Abyssinian", "beagle", "pug"]
TRAIN_PER_CLASS = 10
CHECK_PER_CLASS = 2  # further photos of each class, unseen in training
# Few steps: the head only has to be a real, non-uniform classifier.
BRIEF = HParams(how_many_training_steps=40, eval_step_interval=20)


def _photos(datasets: Path, skip: int, take: int) -> list[Path]:
    root = datasets / "pets-dev"
    return [p for c in CLASSES for p in sorted((root / c).iterdir())[skip : skip + take]]


@pytest.fixture(scope="module")
def check_photos(datasets: Path) -> list[Path]:
    """Shared photos no version here was trained on."""
    return _photos(datasets, TRAIN_PER_CLASS, CHECK_PER_CLASS)


@pytest.fixture(scope="module", params=AUTO_CANDIDATES)
def version(
    request: pytest.FixtureRequest,
    datasets: Path,
    breedbot_home: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    """A version folder trained on the given backbone."""
    work = tmp_path_factory.mktemp(f"export-{request.param}")
    for path in _photos(datasets, 0, TRAIN_PER_CLASS):
        (work / "photos" / path.parent.name).mkdir(parents=True, exist_ok=True)
        (work / "photos" / path.parent.name / path.name).symlink_to(path)
    hparams = dataclasses.replace(BRIEF, tfhub_module=request.param)
    result = train.retrain(
        work / "photos",
        work / "version",
        hparams,
        home=breedbot_home,
        bottleneck_dir=work / "cache",
    )
    return result.output_dir


def _cli(*argv: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(list(argv)) == 0
    return out.getvalue()


def _breedbot(version: Path, home: Path, photos: list[Path], precision: str) -> np.ndarray:
    """breedbot's own probabilities [photos, labels] through LiteRT."""
    clf = load_classifier(version, home=home, engine="litert", precision=precision)
    preds = clf.predict([p.read_bytes() for p in photos], top_k=len(clf.labels))
    return np.array(
        [[{g.label: g.probability for g in p.top_k}[x] for x in clf.labels] for p in preds]
    )


@pytest.fixture(scope="module")
def exported(version: Path, breedbot_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`breedbot export --onnx` of the version: the folder it wrote."""
    out = tmp_path_factory.mktemp("exported")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("BREEDBOT_HOME", str(breedbot_home))
        printed = _cli("export", "--graph", str(version), "--onnx", "--out", str(out))
    assert "model.onnx" in printed and "labels.txt" in printed
    return out


def test_onnx_matches_breedbot_float(
    version: Path, exported: Path, breedbot_home: Path, check_photos: list[Path], tmp_path: Path
) -> None:
    onnx = PortableModel(exported / "model.onnx")
    expected = _breedbot(version, breedbot_home, check_photos, "float")
    got = np.array([onnx.answer_bytes(p.read_bytes()).probabilities for p in check_photos])
    assert onnx.labels == (version / "retrained_labels.txt").read_text().splitlines()
    alone = tmp_path / "model.onnx"  # no labels.txt beside it: the embedded ones
    alone.write_bytes((exported / "model.onnx").read_bytes())
    assert PortableModel(alone).labels == onnx.labels
    assert (got.argmax(1) == expected.argmax(1)).all()
    assert np.abs(got - expected).max() < 1e-3
    # Any size, resized inside the graph: the same answers, up to the resize's filter.
    raw = [np.asarray(Image.open(p).convert("RGB")) for p in check_photos]
    whole = np.array([onnx.answer(pixels).probabilities for pixels in raw])
    assert (whole.argmax(1) == expected.argmax(1)).all()
    assert np.abs(whole.sum(1) - 1).max() < 1e-5


def test_readme_snippet_answers_as_breedbot(
    version: Path, breedbot_home: Path, check_photos: list[Path], tmp_path: Path
) -> None:
    """README.txt says what to do with a photo; doing exactly that gives breedbot's answers."""
    source = export.load_source(version, home=breedbot_home)
    export.export_portable(source, tmp_path)
    readme = (tmp_path / README_FILE).read_text()
    start = readme.index("import sys")
    snippet = readme[start : readme.index("\n\n", start)]
    assert len(snippet.splitlines()) <= 10
    (tmp_path / "run.py").write_text(snippet + "\n")
    expected = _breedbot(version, breedbot_home, check_photos, "auto")
    labels = (tmp_path / "labels.txt").read_text().splitlines()
    for photo, probabilities in zip(check_photos, expected, strict=True):
        run = subprocess.run(
            [sys.executable, "run.py", str(photo)],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            check=True,
        )
        label, p = run.stdout.splitlines()[0].rsplit(" ", 1)
        assert label == labels[int(probabilities.argmax())]
        # int8 serves a differently quantised graph than the exported dynamic-range one.
        assert abs(float(p) - probabilities.max()) < 0.05


def test_label_image_model_prints_label_images_lines(
    version: Path,
    exported: Path,
    breedbot_home: Path,
    check_photos: list[Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BREEDBOT_HOME", str(breedbot_home))
    photo = str(check_photos[0])
    theirs = _cli("label-image", "--graph", str(version), "--image", photo).splitlines()
    for model in [exported / "model.onnx", *exported.glob("*.tflite")]:
        ours = _cli("label-image", "--model", str(model), "--image", photo).splitlines()
        assert ours[0].split(" (score")[0] == theirs[0].split(" (score")[0]
        assert len(ours) == len(theirs)
        assert ours[-1].split(" (p")[0] == theirs[-1].split(" (p")[0]  # "# cat or dog: yes"


def test_zero_shot_export(breedbot_home: Path, check_photos: list[Path], tmp_path: Path) -> None:
    """Version 0 (ImageNet's pet classes) exports too, and answers as breedbot's zero-shot."""
    source = export.load_source(None, home=breedbot_home)
    files = export.export_portable(source, tmp_path)
    assert [f.name for f in files] == ["model_float.tflite", "labels.txt", "README.txt"]
    tflite = PortableModel(files[0])
    clf = load_classifier(None, home=breedbot_home, engine="litert")
    preds = clf.predict([p.read_bytes() for p in check_photos], top_k=1)
    for photo, pred in zip(check_photos, preds, strict=True):
        answer = tflite.answer(decode_image(photo.read_bytes(), tflite.image_size))
        assert tflite.labels[int(answer.probabilities.argmax())] == pred.top_k[0].label
        assert abs(answer.probabilities.max() - pred.top_k[0].probability) < 1e-3
        assert answer.pet_probability == pytest.approx(pred.pet_probability, abs=1e-3)


def test_eval_html_shows_the_mistakes_offline(
    version: Path,
    breedbot_home: Path,
    datasets: Path,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """`eval --html`: one page, images inline, the sheet exactly when there are mistakes."""
    monkeypatch.setenv("BREEDBOT_HOME", str(breedbot_home))
    for path in _photos(datasets, TRAIN_PER_CLASS, CHECK_PER_CLASS + 2):
        (tmp_path / "photos" / path.parent.name).mkdir(parents=True, exist_ok=True)
        (tmp_path / "photos" / path.parent.name / path.name).symlink_to(path)
    page = tmp_path / "report.html"
    printed = _cli("eval", "--graph", str(version), "--image_dir", str(tmp_path / "photos"),
                   "--json", "--html", str(page))  # fmt: skip
    report = json.loads(printed)
    html = page.read_text()
    assert "Per-class accuracy" in html and "Confusion matrix" in html
    assert ("data:image/jpeg;base64," in html) == bool(report["misclassified"])
    assert 'src="http' not in html and "<script" not in html
