"""The classifier a worker serves: one interface over both engines, decode to top-k and gate.

TensorFlow-free: a LiteRT classifier loads here; `model.predict.load_classifier` adds the
TensorFlow engine, which it imports only when asked for.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from model import data
from model.features import decode_many
from model.runtime import imagenet, litert, openset
from model.runtime import images as imagelib

# Inside a version folder.
LABELS_FILE = "retrained_labels.txt"
METRICS_FILE = "metrics.json"

# The cat/dog gate, on ImageNet's answer for the photo: a pet when half its mass is on carnivores
# or its best guess is one (dogs, cats, and the lynx, fox or bear an unknown breed resembles).
PET_GATE = 0.5
PET_CLASSES = frozenset(imagenet.CARNIVORE_CLASS_IDS)
# Short of that, a carnivore among ImageNet's top 5 and a model at least this sure of its breed
# give "not sure, maybe X" rather than a refusal: a real pet in a box, on a bed or half hidden.
MAYBE_CONFIDENCE = 0.5

# float32 [N,S,S,3] pixels in [0,1] -> the outputs of ClassifierModule.classify_images.
ClassifyFn = Callable[[np.ndarray], dict[str, np.ndarray]]


@dataclass(frozen=True)
class Guess:
    """One ranked answer."""

    label: str
    display_name: str
    probability: float


@dataclass(frozen=True)
class Prediction:
    """The answer for one image; `error` is set (and `top_k` empty) when the image was rejected."""

    top_k: list[Guess]
    is_pet: bool | None
    pet_probability: float
    imagenet_label: str
    imagenet_probability: float
    error: str | None = None
    error_message: str | None = None
    pet_unsure: bool = False  # passed the gate only as "not sure, maybe X"
    answer: openset.Answer | None = None  # the decision (model/runtime/openset.py)
    # The guesses behind the answer, calibrated: the trained classes of the photo's species, or
    # ImageNet's breeds of it when the answer is "not one of my breeds". `top_k` stays the
    # layer's own ranking of every trained class (what accuracy is measured on).
    guesses: list[Guess] = field(default_factory=list)


@dataclass
class Timings:
    """Where the time of the last predict() call went, in milliseconds."""

    decode_ms: float = 0.0
    model_ms: float = 0.0
    extra: dict[str, float] = field(default_factory=dict)


def pet_gate(
    carnivore_mass: float, imagenet_class: int, carnivore_in_top5: bool, confidence: float
) -> tuple[bool, bool]:
    """(a cat or a dog, only "not sure, maybe X") from ImageNet's answer and the model's top one."""
    sure = carnivore_mass >= PET_GATE or imagenet_class in PET_CLASSES
    return sure, not sure and carnivore_in_top5 and confidence >= MAYBE_CONFIDENCE


class Classifier:
    """A loaded model: holds a TensorFlow graph or LiteRT interpreters, so it is a class."""

    def __init__(
        self,
        classify: ClassifyFn,
        labels: list[str],
        display_names: list[str],
        model_dir: Path | None,
        *,
        engine: str,
        image_size: int,
        open_set: openset.OpenSet | None = None,
    ):
        self.engine = engine  # "tf", "litert-float" or "litert-int8"
        self.image_size = image_size  # S: photos are resized to S x S for the backbone
        self._classify = classify
        self.labels = labels
        self.display_names = display_names
        self.model_dir = model_dir
        # Older versions: species of each class unknown, every photo answered with a class.
        self.open_set = open_set or openset.OpenSet([None] * len(labels))
        self.last_timings = Timings()
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="decode")

    def predict_pixels(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        """Raw model outputs for a float32 [N,S,S,3] batch in [0,1]."""
        return self._classify(pixels)

    def predict(self, images: list[bytes], top_k: int = 5) -> list[Prediction]:
        """Classify encoded images in one forward pass; a bad image gets an error, not a raise."""
        t0 = time.perf_counter()
        decoded = list(decode_many(images, self._pool, size=self.image_size))
        return self.predict_decoded(decoded, top_k, (time.perf_counter() - t0) * 1e3)

    def predict_decoded(
        self,
        decoded: list[np.ndarray | imagelib.ImageError],
        top_k: int = 5,
        decode_ms: float = 0.0,
    ) -> list[Prediction]:
        """Classify decoded images (or the ImageError each one raised) in one forward pass."""
        good = [i for i, d in enumerate(decoded) if not isinstance(d, imagelib.ImageError)]
        t1 = time.perf_counter()
        out = (
            self.predict_pixels(imagelib.to_float(np.stack([decoded[i] for i in good])))
            if good
            else {}
        )
        self.last_timings = Timings(decode_ms, (time.perf_counter() - t1) * 1e3)
        results: list[Prediction] = []
        row = {i: r for r, i in enumerate(good)}
        for i, d in enumerate(decoded):
            if isinstance(d, imagelib.ImageError):
                results.append(Prediction([], None, 0.0, "", 0.0, d.code, str(d)))
            else:
                results.append(self._prediction(out, row[i], top_k))
        return results

    def _prediction(self, out: dict[str, np.ndarray], r: int, top_k: int) -> Prediction:
        probs = out["probabilities"][r]
        pet = float(out["pet_probability"][r])
        cls = int(out["imagenet_class"][r])
        # Versions saved before the top-5 output lack it: their gate stays the strict one.
        in_top5 = "pet_in_top5" in out and bool(out["pet_in_top5"][r])
        sure, maybe = pet_gate(pet, cls, in_top5, float(probs.max()))
        raw = openset.Evidence(
            probabilities=probs,
            imagenet=out["imagenet_probabilities"][r] if "imagenet_probabilities" in out else None,
            features=out["features"][r] if "features" in out else None,
            is_pet=None if pet < 0 else (sure or maybe),
            pet_unsure=maybe,
            pet_probability=max(pet, 0.0),
        )
        evidence = openset.gated(raw, self.open_set)
        answer, ranked = openset.decide(evidence, self.open_set, self.labels, self.display_names)
        # Stable, so ties (int8 logits can be equal) break to the lowest index, as argmax does.
        order = np.argsort(-probs, kind="stable")[: max(1, top_k)]
        return Prediction(
            top_k=[
                Guess(self.labels[j], self.display_names[j], round(float(probs[j]), 6))
                for j in order
            ],
            is_pet=evidence.is_pet,
            pet_probability=evidence.pet_probability,
            imagenet_label=imagenet.class_names()[cls] if cls >= 0 else "",
            imagenet_probability=float(out["imagenet_probability"][r]),
            pet_unsure=evidence.pet_unsure,
            answer=answer,
            guesses=[Guess(label, name, round(p, 6)) for label, name, p in ranked[: max(1, top_k)]],
        )

    def warm_up(self) -> None:
        """Run one dummy batch so the first real request does not pay for tracing."""
        self.predict_pixels(np.zeros((1, self.image_size, self.image_size, 3), np.float32))


def read_labels(model_dir: Path) -> list[str]:
    """The labels of a version folder, one per line in index order."""
    text = (Path(model_dir) / LABELS_FILE).read_text("utf-8")
    return [line for line in text.splitlines() if line]


def _litert_classify(pipeline: litert.Pipeline) -> ClassifyFn:
    return lambda pixels: litert.classification(pipeline(pixels))


def served_precision(model_dir: Path) -> str | None:
    """The LiteRT precision a version folder serves (from metrics.json), None if it has none."""
    try:
        report = json.loads((Path(model_dir) / METRICS_FILE).read_text("utf-8"))
    except FileNotFoundError:
        return None
    return report.get("litert", {}).get("served")


def version_classifier(
    model_dir: Path, precision: str = "auto", *, num_threads: int | None = None
) -> Classifier | None:
    """A version folder through LiteRT; None when it has no LiteRT files in that precision."""
    chosen = served_precision(model_dir) if precision == "auto" else precision
    pipeline = chosen and litert.version_pipeline(
        model_dir / litert.VERSION_DIR, chosen, num_threads=num_threads
    )
    if not pipeline:
        return None
    labels = read_labels(model_dir)
    names = [data.display_name(x) for x in labels]
    engine = f"litert-{chosen}"
    size = pipeline.image_size
    return Classifier(
        _litert_classify(pipeline),
        labels,
        names,
        model_dir,
        engine=engine,
        image_size=size,
        open_set=openset.OpenSet.load(model_dir, labels),
    )


def zero_shot_classifier(
    home: Path, backbone: str, *, num_threads: int | None = None
) -> Classifier:
    """The zero-shot pet model through LiteRT float; `litert.NotConverted` before its first use."""
    pipeline = litert.zero_shot_pipeline(home, backbone, num_threads=num_threads)
    labels = imagenet.pet_class_labels()
    names = imagenet.pet_class_names()
    classify = _litert_classify(pipeline)
    size = pipeline.image_size
    return Classifier(
        classify,
        labels,
        names,
        None,
        engine="litert-float",
        image_size=size,
        open_set=openset.OpenSet.zero_shot(),
    )
