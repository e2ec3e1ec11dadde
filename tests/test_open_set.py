"""Honest answers outside the trained breeds (issue 19): the species rule, "not one of my
breeds", calibration, the `label-image --json` contract and the reply texts in both languages."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import contract
from bot import render, replies
from bot.i18n import percent
from fakegram.api import FakeTelegram, PlaygroundClient
from model import openset_fit
from model.runtime import imagenet, openset
from tests.test_replies import _bot_events, _target, fake, user  # noqa: F401 (fixtures)

PUG, SIAMESE = 254, 284  # ImageNet class ids


def _imagenet(peaks: dict[int, float]) -> np.ndarray:
    """An ImageNet probability vector with `peaks`, the rest spread evenly."""
    q = np.full(imagenet.NUM_CLASSES, (1 - sum(peaks.values())) / imagenet.NUM_CLASSES)
    for k, v in peaks.items():
        q[k] += v
    return q


def _evidence(probs: list[float], peaks: dict[int, float], **fields: object) -> openset.Evidence:
    values = {"is_pet": True, "pet_unsure": False, "pet_probability": 0.95, **fields}
    return openset.Evidence(np.array(probs), _imagenet(peaks), None, **values)  # type: ignore[arg-type]


CATS = openset.OpenSet(["cat", "cat", "cat"], temperature=1.0, threshold=0.5)
CAT_LABELS = ["Birman", "Bombay", "Persian"]


def test_a_dog_never_gets_a_cat_breed() -> None:
    """A pug photo to a model of 3 cat breeds sure it is a Birman: a dog, not one of 3, a pug."""
    answer, guesses = openset.decide(
        _evidence([0.97, 0.02, 0.01], {PUG: 0.8}), CATS, CAT_LABELS, CAT_LABELS
    )
    assert (answer.species, answer.trained, answer.label) == ("dog", False, "pug")
    assert answer.known_breeds == 3 and answer.score == pytest.approx(0.8, abs=0.01)
    assert guesses[0][0] == "pug" and all(g[0] not in CAT_LABELS for g in guesses)


def test_species_restricts_a_mixed_model_to_the_photos_species() -> None:
    """Two cat classes and one dog class: a cat photo is never given the dog class."""
    mixed = openset.OpenSet(["dog", "cat", "cat"], threshold=0.0)
    labels = ["pug", "Siamese", "Persian"]
    answer, guesses = openset.decide(
        _evidence([0.9, 0.07, 0.03], {SIAMESE: 0.7}), mixed, labels, labels
    )
    assert (answer.species, answer.label, answer.trained) == ("cat", "Siamese", True)
    assert [g[0] for g in guesses] == ["Siamese", "Persian"]  # renormalised over cats
    assert answer.score == pytest.approx(0.7, abs=0.01)


def test_weak_evidence_is_not_one_of_my_breeds_and_unsure_is_never_high() -> None:
    """Below the threshold: species only when ImageNet names no breed of it; a gate "maybe"
    caps the number at the pet probability."""
    answer, _ = openset.decide(_evidence([0.4, 0.35, 0.25], {}), CATS, CAT_LABELS, CAT_LABELS)
    assert answer.trained is False and answer.label is None
    unsure, _ = openset.decide(
        _evidence([0.99, 0.005, 0.005], {SIAMESE: 0.3}, pet_unsure=True, pet_probability=0.3),
        openset.OpenSet(["cat"] * 3),
        CAT_LABELS,
        CAT_LABELS,
    )
    assert unsure.trained and unsure.score <= 0.3


def test_maybe_a_pet_needs_the_evidence_of_a_trained_breed() -> None:
    """The gate's "maybe" tier: kept for a photo close to a trained breed, refused (no cat or
    dog) for one the layer only guesses; a sure pet is never touched."""
    maybe = {"pet_unsure": True, "pet_probability": 0.3}
    close = _evidence([0.99, 0.005, 0.005], {SIAMESE: 0.3}, **maybe)
    weak = _evidence([0.4, 0.35, 0.25], {SIAMESE: 0.3}, **maybe)
    kept, refused = openset.gated(close, CATS), openset.gated(weak, CATS)
    assert (kept.is_pet, kept.pet_unsure) == (True, True)
    assert (refused.is_pet, refused.pet_unsure) == (False, False)
    answer, _ = openset.decide(refused, CATS, CAT_LABELS, CAT_LABELS)
    assert answer.species is None and not answer.trained
    sure = _evidence([0.4, 0.35, 0.25], {SIAMESE: 0.3})
    assert openset.gated(sure, CATS) is sure


def test_temperature_and_calibration_error() -> None:
    """Overconfident answers (true T = 3) get a temperature near 3 and a smaller ECE."""
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (3000, 4))
    y = np.array([rng.choice(4, p=p) for p in openset.calibrated(np.exp(logits), 1.0)])
    sharp = openset.calibrated(np.exp(logits), 1 / 3)
    t = openset_fit.fit_temperature(sharp, y)
    assert 2.5 < t < 3.5
    fixed = openset.calibrated(sharp, t)
    before = openset_fit.expected_calibration_error(sharp.max(1), sharp.argmax(1) == y)
    after = openset_fit.expected_calibration_error(fixed.max(1), fixed.argmax(1) == y)
    assert after < 0.03 < before


def test_old_versions_load_without_open_set(tmp_path: Path) -> None:
    """A version folder from before issue 19: every photo gets a class (no threshold); species
    inferred from Oxford or ImageNet names, so a dog still never gets a known cat breed."""
    labels = ["Birman", "Siamese", "my_cat"]
    (tmp_path / "metrics.json").write_text(json.dumps({"labels": labels}))
    old = openset.OpenSet.load(tmp_path, labels)
    assert old.species == [None, "cat", None] and old.threshold == 0.0
    answer, guesses = openset.decide(_evidence([0.1, 0.6, 0.3], {PUG: 0.9}), old, labels, labels)
    assert answer.trained and answer.label == "my_cat" and answer.species == "dog"
    assert "Siamese" not in [g[0] for g in guesses]


def _result(answer: contract.Answer, top: list[tuple[str, float]]) -> contract.ClassifyResult:
    return contract.ClassifyResult(
        model_version=7,
        top_k=[contract.Guess(n, n.capitalize(), p).to_dict() for n, p in top],
        is_pet=True,
        pet_probability=0.97,
        imagenet_label="pug",
        imagenet_probability=0.81,
        answer=answer.to_dict(),
    )


OUTSIDE = _result(contract.Answer("dog", "pug", "Pug", False, 0.81, 3), [("pug", 0.81)])
SPECIES_ONLY = _result(contract.Answer("cat", None, None, False, 0.9, 3), [("tabby", 0.2)])
TRAINED = _result(
    contract.Answer("cat", "Birman", "Birman", True, 0.88, 3), [("Birman", 0.88), ("Bombay", 0.1)]
)


@pytest.mark.parametrize(
    ("result", "language", "expected"),
    [
        (OUTSIDE, "en", "A dog, but not one of the 3 breeds I know. It looks like: Pug (81%)"),
        (
            OUTSIDE,
            "pt-BR",
            "Um cachorro, mas de nenhuma das 3 raças que conheço. Parece: Pug (81%)",
        ),
        (SPECIES_ONLY, "en", "A cat, but not one of the 3 breeds I know."),
        (SPECIES_ONLY, "pt-BR", "Um gato, mas de nenhuma das 3 raças que conheço."),
        (TRAINED, "en", "Birman — 88%"),
    ],
)
def test_reply_texts_through_the_emulator(
    fake: FakeTelegram,  # noqa: F811
    user: PlaygroundClient,  # noqa: F811
    result: contract.ClassifyResult,
    language: str,
    expected: str,
) -> None:
    """The reply task sends each answer kind, worded in the user's language, to the chat."""
    chat_id = 9300 + len(expected) % 97
    target = _target(user, chat_id, language=language)
    replies.reply(result.to_dict(), reply_to=target.to_dict(), kind="classify", photo_id=None)
    caption = _bot_events(fake, chat_id)[-1]["message"]["caption"]
    assert caption.splitlines()[0] == expected
    assert caption == render.classification_text(result, language, 0.5)


@pytest.mark.parametrize(
    ("language", "words"),
    [("en", "This version knows 3 breeds."), ("pt-BR", "Esta versão conhece 3 raças.")],
)
def test_retrain_reply_says_what_the_version_knows(
    fake: FakeTelegram,  # noqa: F811
    user: PlaygroundClient,  # noqa: F811
    language: str,
    words: str,
) -> None:
    """The retrain reply in the chat: how many breeds, how other photos are answered, what keeps
    every photo on a trained breed, and ECE before and after."""
    report = {"species": ["cat"] * 3, "left_out_claimed": 0.2, "right_refused": 0.01,
              "ece_before": 0.08, "ece_after": 0.02}  # fmt: skip
    result = contract.RetrainResult(5, True, 0.95, {"open_set": report})
    chat_id = 9400 + len(language)
    target = _target(user, chat_id, language=language)
    replies.reply(result.to_dict(), reply_to=target.to_dict(), kind="retrain")
    text = _bot_events(fake, chat_id)[-1]["message"]["text"]
    assert text == render.retrain_text(result, language)
    assert words in text and "/retrain open_set=0" in text
    assert f"{percent(0.08, language)} → {percent(0.02, language)}" in text


@pytest.mark.slow
def test_label_image_json_on_real_photos(
    datasets: Path, breedbot_home: Path, tmp_path: Path
) -> None:
    """Retrain on 3 cat breeds of pets-dev, then `label-image --json`: one object per image, in
    order; dogs are dogs and never a cat breed; a daisy is no pet; a missing file an error."""
    pets = datasets / "pets-dev"
    images = tmp_path / "three"
    images.mkdir()
    for breed in ("Birman", "Bombay", "Persian"):
        (images / breed).symlink_to(pets / breed)
    env = {**os.environ, "BREEDBOT_HOME": str(breedbot_home)}
    cli = [sys.executable, "-m", "model.cli"]
    graph = tmp_path / "v"
    # Lite0 pinned: the backbone choice is beside the point here, and auto would cost 3 of them.
    subprocess.run([*cli, "retrain", "--image_dir", str(images), "--output_graph", str(graph),
                    "--tfhub_module", "efficientnet_lite0", "--how_many_training_steps", "300"],
                   check=True, env=env, capture_output=True)  # fmt: skip
    dogs = [sorted((pets / b).glob("*.jpg"))[0] for b in ("pug", "samoyed", "beagle", "boxer")]
    birman = sorted((pets / "Birman").glob("*.jpg"))[0]
    daisy = sorted((datasets / "flowers-dev" / "daisy").glob("*.jpg"))[0]
    asked = [*map(str, dogs), str(birman), str(daisy), str(tmp_path / "missing.jpg")]
    run = subprocess.run([*cli, "label-image", "--json", "--graph", str(graph), "--image", *asked],
                         env=env, capture_output=True, text=True)  # fmt: skip
    lines = [json.loads(line) for line in run.stdout.splitlines()]
    assert [line["image"] for line in lines] == asked and run.returncode == 1
    for line in lines[:4]:
        assert set(line) == {"image", "species", "breed", "trained", "score"}
        assert line["species"] == "dog" and line["trained"] is False
        assert line["breed"] not in {"Birman", "Bombay", "Persian"}
        assert 0 <= line["score"] <= 1
    assert lines[4]["species"] == "cat" and lines[4]["breed"] == "Birman" and lines[4]["trained"]
    assert lines[5]["species"] is None and lines[5]["trained"] is False
    assert lines[6] == {"image": asked[6], "error": "unreadable"}
    metrics = json.loads((graph / "metrics.json").read_text())
    assert metrics["open_set"]["species"] == ["cat", "cat", "cat"]
    assert metrics["open_set"]["threshold_source"] == "cross_validation"
