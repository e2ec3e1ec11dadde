"""Gate and zero-shot benchmark per backbone: who passes the cat/dog gate, and ImageNet's top-1.

Run: `.venv/bin/python bench/gate_bench.py`. Prints JSON and updates the `gate_bench` section of
docs/BENCHMARKS.md. Everything comes from cached original-view bottlenecks and each backbone's
ImageNet head (what the LiteRT gate file computes). The retrained model's confidence, which the
"not sure, maybe X" tier uses, is honest on both sets: pets-dev photos are answered out of fold
(5-fold CV, the retrain's own), flowers-dev photos by the layer trained on all of pets-dev.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import DATASETS, emit, machine
from model import backbones, crossval, data, features, head, train
from model.hparams import HParams
from model.runtime import imagenet
from model.runtime.classifier import pet_gate

HANDLES = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
GOALS = {"pets_pass": 0.99, "flowers_pass": 0.01}


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _vectors(backbone: backbones.Backbone, items: list, cache: Path, mirror: bool) -> dict:
    views = [[features.ORIGINAL, features.FLIP] if mirror else [features.ORIGINAL]] * len(items)
    return train.bottlenecks(backbone, items, views, cache).vectors


def gate_rates(inet: np.ndarray, confidence: np.ndarray) -> dict[str, np.ndarray]:
    """Per photo: passed by the old rule, by the carnivore rule, and with the "maybe" tier."""
    mask = np.zeros(imagenet.NUM_CLASSES, bool)
    mask[list(imagenet.PET_CLASS_IDS)] = True
    old = (inet[:, mask].sum(1) >= 0.5) | mask[inet.argmax(1)]
    mass = inet[:, list(imagenet.CARNIVORE_CLASS_IDS)].sum(1)
    top5 = np.isin(np.argsort(-inet, axis=1)[:, :5], imagenet.CARNIVORE_CLASS_IDS).any(1)
    decided = [
        pet_gate(float(m), int(c), bool(t), float(p))
        for m, c, t, p in zip(mass, inet.argmax(1), top5, confidence, strict=True)
    ]
    sure = np.array([s for s, _ in decided])
    maybe = np.array([m for _, m in decided])
    return {"old_123_classes": old, "carnivores": sure, "carnivores_or_maybe": sure | maybe}


def bench_backbone(handle: str, home: Path, cache: Path) -> dict:
    """Zero-shot top-1/top-5 on the breeds ImageNet has, and the gate's pass rates."""
    backbone = backbones.load_backbone(handle, home)
    kernel, bias = backbones.imagenet_head(backbone.module)
    pets = data.load_dataset(DATASETS / "pets-dev")
    flowers = data.load_dataset(DATASETS / "flowers-dev")
    index = {c: i for i, c in enumerate(pets.classes)}
    y = np.array([index[im.label] for im in pets.images])
    vp = _vectors(backbone, pets.images, cache, mirror=True)
    vf = _vectors(backbone, flowers.images, cache, mirror=False)["original"]
    inet_p, inet_f = _softmax(vp["original"] @ kernel + bias), _softmax(vf @ kernel + bias)

    covered = np.array([im.label in imagenet.OXFORD_TO_IMAGENET for im in pets.images])
    truth = np.array([imagenet.OXFORD_TO_IMAGENET.get(im.label, -1) for im in pets.images])
    pet_ids = np.array(imagenet.PET_CLASS_IDS)
    ranked = pet_ids[np.argsort(-inet_p[:, pet_ids], axis=1)]

    hp = HParams()
    views = [vp["original"], vp["flip"]]
    folds = crossval.stable_folds(pets.images, hp.cv_folds)
    config = train.head_config(hp)
    cv = crossval.cross_validate(views, y, folds, len(index), config, train.l2_grid(hp))
    final = head.train_head(
        np.concatenate(views),
        np.tile(y, 2),
        views[0][:0],
        y[:0],
        len(index),
        replace(config, l2=cv.best_l2, steps=cv.best_step),
    )
    on_pets = gate_rates(inet_p, cv.probabilities.max(1))
    on_flowers = gate_rates(inet_f, final.probabilities(vf).max(1))
    return {
        "image_size": backbone.image_size,
        "zero_shot_top1_covered": round(float((ranked[covered, 0] == truth[covered]).mean()), 4),
        "zero_shot_top5_covered": round(
            float((ranked[covered, :5] == truth[covered, None]).any(1).mean()), 4
        ),
        "n_covered": int(covered.sum()),
        "n_uncovered": int((~covered).sum()),
        "n_flowers": len(vf),
        "gate": {
            rule: {
                "pets_pass": round(float(on_pets[rule].mean()), 4),
                "uncovered_breeds_pass": round(float(on_pets[rule][~covered].mean()), 4),
                "flowers_pass": round(float(on_flowers[rule].mean()), 4),
            }
            for rule in on_pets
        },
    }


def markdown(result: dict) -> str:
    """The table written into docs/BENCHMARKS.md."""
    rows = [
        "## Cat/dog gate and zero-shot (`bench/gate_bench.py`)",
        "",
        f"Machine: {result['machine']}. Zero-shot = ImageNet's head restricted to its 123 dog "
        "and cat classes, on the pets-dev photos of the 25 breeds ImageNet has. Gate pass "
        "rates on all of pets-dev, on its 12 breeds ImageNet lacks, and on flowers-dev. Rules: "
        "old = ImageNet mass on the 123 dog and cat classes ≥ 0.5 or best guess one of them; "
        "carnivores = the same on ImageNet's carnivore block (151–299); + maybe = also a "
        "carnivore in ImageNet's top 5 and the retrained model ≥ 50 % sure (answered as "
        '"not sure, maybe X"; the model\'s confidence is out of fold on pets-dev). Goals: '
        f"≥ {GOALS['pets_pass']:.0%} of pets pass, ≤ {GOALS['flowers_pass']:.0%} of flowers.",
        "",
        "| backbone | zero-shot top-1 / top-5 | rule | pets pass | unknown breeds pass "
        "| flowers pass |",
        "|---|---|---|---|---|---|",
    ]
    for handle, r in result["backbones"].items():
        zero_shot = f"{r['zero_shot_top1_covered']:.1%} / {r['zero_shot_top5_covered']:.1%}"
        for rule, g in r["gate"].items():
            rows.append(
                f"| {handle} | {zero_shot} "
                f"| {rule} | {g['pets_pass']:.1%} | {g['uncovered_breeds_pass']:.1%} "
                f"| {g['flowers_pass']:.1%} |"
            )
    return "\n".join(rows)


def main() -> None:
    """Run the benchmark and record it."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--home", type=Path, help="BREEDBOT_HOME with the backbone exports")
    parser.add_argument("--bottlenecks", type=Path, help="a bottleneck cache to reuse")
    args = parser.parse_args()
    home = args.home or backbones.default_home()
    with tempfile.TemporaryDirectory(prefix="gate-bench-") as tmp:
        cache = args.bottlenecks or Path(tmp)
        result = {
            "bench": "gate",
            "machine": machine(),
            "goals": GOALS,
            "backbones": {handle: bench_backbone(handle, home, cache) for handle in HANDLES},
        }
    emit("gate_bench", result, markdown(result))


if __name__ == "__main__":
    main()
