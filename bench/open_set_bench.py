"""Honesty outside the trained breeds (issue 19): species errors, claims on untrained breeds,
in-set accuracy and calibration, before and after, on pets-dev with breeds held out.

Run: `.venv/bin/python bench/open_set_bench.py [--backbone efficientnet_lite2]`. Prints JSON into
bench/results/ and updates the `open_set_bench` section of docs/BENCHMARKS.md (one per backbone).
Backbone: EfficientNet-Lite0 by default (the zero-shot model's; bottlenecks come from the
BREEDBOT_HOME cache, LiteRT float on a CPU); `auto` picks among Lite0-2 per dataset. Each scenario
trains on some breeds with the retrain's defaults (5-fold CV, the L2 grid, mirrors) and the
retrain's own open-set fit; in-set photos are answered out of fold (by a layer and centroids
that never saw them), held-out breeds and flowers-dev by the layer trained on all in-set photos.
"Before" is the product at 19f5adb: the top class among all trained breeds, always "trained".
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import DATASETS, machine, update_section
from model import backbones, crossval, data, features, head, openset_fit, train
from model.hparams import DEFAULT_BACKBONE, HParams
from model.runtime import imagenet, openset
from model.runtime.classifier import pet_gate

RESULTS = Path(__file__).resolve().parent / "results" / "open_set_bench.json"
GOALS = {
    "species_errors": 0.01,
    "untrained_claimed": 0.30,
    "in_set_accuracy_drop": 0.02,
    "ece": 0.03,
    "gate_refused_pets": 0.01,
    "gate_passed_flowers": 0.01,
}
# Perfectly calibrated draws averaged for the ECE floor; bins of the equal-mass ECE.
FLOOR_DRAWS = 200
MASS_BINS = 10
CATS = {"Abyssinian", "Bengal", "Birman", "Bombay", "British_Shorthair", "Egyptian_Mau"}
CATS |= {"Maine_Coon", "Persian", "Ragdoll", "Russian_Blue", "Siamese", "Sphynx"}


def _scenarios(classes: list[str], seed: int) -> dict[str, list[str]]:
    """Trained breeds per scenario: half the cats, half the dogs, half of all (seeded)."""
    rng = np.random.default_rng(seed)
    cats = [c for c in classes if c in CATS]
    dogs = [c for c in classes if c not in CATS]
    return {
        f"cats_half_s{seed}": sorted(rng.choice(cats, len(cats) // 2, replace=False)),
        f"dogs_half_s{seed}": sorted(rng.choice(dogs, len(dogs) // 2, replace=False)),
        f"random_half_s{seed}": sorted(rng.choice(classes, len(classes) // 2, replace=False)),
    }


class Photos:
    """pets-dev and flowers-dev bottlenecks with ImageNet's view of them."""

    def __init__(self, home: Path, handle: str) -> None:
        backbone = backbones.load_backbone(handle, home)
        kernel, bias = backbones.imagenet_head(backbone.module)
        views = [features.ORIGINAL, features.FLIP]
        self.pets = data.load_dataset(DATASETS / "pets-dev")
        flowers = data.load_dataset(DATASETS / "flowers-dev")
        cache = home / "bottlenecks"
        vp = train.bottlenecks(backbone, self.pets.images, [views] * len(self.pets.images), cache)
        vf = train.bottlenecks(backbone, flowers.images, [views[:1]] * len(flowers.images), cache)
        self.x, self.flip = vp.vectors["original"], vp.vectors["flip"]
        self.inet = crossval.softmax(self.x @ kernel + bias)
        self.flowers_x = vf.vectors["original"]
        self.flowers_inet = crossval.softmax(self.flowers_x @ kernel + bias)
        self.labels = np.array([im.label for im in self.pets.images])
        self.species = np.array(["cat" if lb in CATS else "dog" for lb in self.labels])


def _gate(inet: np.ndarray, confidence: float) -> tuple[bool, bool]:
    mass = float(inet[list(imagenet.CARNIVORE_CLASS_IDS)].sum())
    top5 = bool(np.isin(np.argsort(-inet)[:5], imagenet.CARNIVORE_CLASS_IDS).any())
    return pet_gate(mass, int(inet.argmax()), top5, confidence)


def _answer(
    probs: np.ndarray, x: np.ndarray, inet: np.ndarray, model: openset.OpenSet, names: list[str]
) -> openset.Answer:
    """The product's decision for one photo, gate included."""
    sure, maybe = _gate(inet, float(probs.max()))
    ev = openset.Evidence(
        probs, inet, x, sure or maybe, maybe, float(inet[list(imagenet.CARNIVORE_CLASS_IDS)].sum())
    )
    return openset.decide(openset.gated(ev, model), model, names, names)[0]


def run_scenario(photos: Photos, trained: list[str], hp: HParams) -> dict:
    """Train on `trained`, answer everything, count before and after."""
    rows = np.flatnonzero(np.isin(photos.labels, trained))
    out = np.flatnonzero(~np.isin(photos.labels, trained))
    index = {c: i for i, c in enumerate(trained)}
    y = np.array([index[lb] for lb in photos.labels[rows]])
    views = [photos.x[rows], photos.flip[rows]]
    fold = crossval.stable_folds([photos.pets.images[i] for i in rows], hp.cv_folds)
    config = train.head_config(hp)
    cv = crossval.cross_validate(views, y, fold, len(trained), config, train.l2_grid(hp))
    final = replace(config, steps=cv.best_step, l2=cv.best_l2, early_stopping_patience=None)
    inputs = openset_fit.Inputs(views, y, photos.inet[rows], cv, trained, final)
    model, report = openset_fit.fit(inputs, hp.open_set_threshold)
    layer = head.train_head(
        np.concatenate(views), np.tile(y, 2), views[0][:0], y[:0], len(trained), final
    )
    answers_in = []
    for f in np.unique(fold):
        fm = replace(openset_fit.fold_model(inputs, model.species, model.temperature, fold != f),
                     threshold=model.threshold)  # fmt: skip
        for r in np.flatnonzero(fold == f):
            i = rows[r]
            answers_in.append(
                (r, _answer(cv.probabilities[r], photos.x[i], photos.inet[i], fm, trained))
            )
    answers_in.sort(key=lambda t: t[0])
    p_out = layer.probabilities(photos.x[out])
    answers_out = [
        _answer(p_out[k], photos.x[i], photos.inet[i], model, trained) for k, i in enumerate(out)
    ]
    p_fl = layer.probabilities(photos.flowers_x)
    answers_fl = [_answer(p_fl[k], photos.flowers_x[k], photos.flowers_inet[k], model, trained)
                  for k in range(len(p_fl))]  # fmt: skip
    return _count(
        photos,
        trained,
        rows,
        out,
        y,
        cv,
        [a for _, a in answers_in],
        answers_out,
        answers_fl,
        report,
        np.concatenate([cv.probabilities.argmax(axis=1), p_out.argmax(axis=1)]),
    )


def _shown_calibration(answers_in: list, y: np.ndarray, trained: list[str]) -> dict:
    """ECE of the score shown with each trained in-set answer (out of fold) against whether it
    was the right breed: 15 equal-width bins (the common default), 10 equal-mass bins, and the
    15-bin ECE a perfectly calibrated score would still show on this many photos (its floor)."""
    shown = [(a.score, a.label == trained[c]) for a, c in zip(answers_in, y, strict=True)
             if a.trained]  # fmt: skip
    score = np.array([s for s, _ in shown])
    hits = np.array([h for _, h in shown], np.float64)
    ece = openset_fit.expected_calibration_error
    rng = np.random.default_rng(0)
    floor = np.mean([ece(score, rng.random(len(score)) < score) for _ in range(FLOOR_DRAWS)])
    mass = np.array_split(np.argsort(score, kind="stable"), MASS_BINS)
    equal_mass = sum(len(b) * abs(score[b].mean() - hits[b].mean()) for b in mass if len(b))
    return {
        "ece_shown": round(ece(score, hits), 4),
        "ece_shown_equal_mass": round(float(equal_mass / max(len(score), 1)), 4),
        "ece_shown_floor": round(float(floor), 4),
        "shown_answers": len(score),
    }


def _share(flags: list[bool] | np.ndarray) -> float:
    """The share of true flags, rounded for the report (0 for none)."""
    return round(float(np.mean(flags)) if len(flags) else 0.0, 4)


def _count(
    photos, trained, rows, out, y, cv, answers_in, answers_out, answers_fl, report, before
) -> dict:
    """Before/after figures of one scenario."""
    pets_answered = answers_in + answers_out
    truth = np.concatenate([photos.species[rows], photos.species[out]])
    said = np.array([a.species for a in pets_answered], dtype=object)
    refused = np.array([a.species is None for a in pets_answered])
    right_in = [a.trained and a.label == trained[c] for a, c in zip(answers_in, y, strict=True)]
    known = [imagenet.OXFORD_TO_IMAGENET.get(lb) for lb in photos.labels[out]]
    named = [
        a.label == imagenet.class_names()[k]
        for a, k in zip(answers_out, known, strict=True)
        if not a.trained and k is not None
    ]
    trained_species = {"cat" if c in CATS else "dog" for c in trained}
    same = [
        a.trained
        for a, s in zip(answers_out, photos.species[out], strict=True)
        if s in trained_species
    ]
    # Before: the species of the top trained class, whatever the photo.
    before_species = np.array(["cat" if trained[c] in CATS else "dog" for c in before])
    return {
        "trained": trained,
        "n_in": len(rows),
        "n_untrained": len(out),
        "before": {
            "species_errors": _share(before_species != truth),
            # Every photo the gate passed got a trained breed.
            "untrained_claimed": _share([a.species is not None for a in answers_out]),
            "in_set_accuracy": round(float(cv.accuracy), 4),
            "ece": report["ece_before"],
        },
        "after": {
            "species_errors": _share((~refused) & (said != truth)),
            "gate_refused_pets": _share(refused),
            "untrained_claimed": _share([a.trained for a in answers_out]),
            "untrained_claimed_same_species": _share(same),
            "in_set_accuracy": _share(right_in),
            "ece": report["ece_after"],
            "flowers_claimed": _share([a.trained for a in answers_fl]),
            "flowers_passed_gate": _share([a.species is not None for a in answers_fl]),
            "imagenet_breed_named_right": _share(named),
            **_shown_calibration(answers_in, y, trained),
        },
        "open_set": report,
    }


def _gate_rates(photos: Photos) -> dict:
    pets = [_gate(q, 1.0) for q in photos.inet]
    flowers = [_gate(q, 1.0) for q in photos.flowers_inet]
    # The "maybe" tier needs the layer's confidence; at 1.0 these are upper bounds for flowers.
    return {
        "gate_refused_pets": round(float(np.mean([not (s or m) for s, m in pets])), 4),
        "gate_passed_flowers": round(float(np.mean([s or m for s, m in flowers])), 4),
        "species_errors_all_pets": round(
            float(np.mean(np.array(openset.species_of(photos.inet)) != photos.species)), 4
        ),
    }


def _mean(results: dict, side: str, key: str) -> float:
    return round(float(np.mean([r[side][key] for r in results.values()])), 4)


def _markdown(report: dict) -> str:
    rows = [
        "| scenario | breeds | species errors (before → after) | untrained answered as trained "
        "| same species | in-set accuracy | ECE | ECE of the shown score (floor) "
        "| ImageNet breed named right |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in report["scenarios"].items():
        b, a = r["before"], r["after"]
        rows.append(
            f"| {name} | {len(r['trained'])} "
            f"| {b['species_errors']:.1%} → {a['species_errors']:.1%} "
            f"| {b['untrained_claimed']:.1%} → {a['untrained_claimed']:.1%} "
            f"| {a['untrained_claimed_same_species']:.1%} "
            f"| {b['in_set_accuracy']:.1%} → {a['in_set_accuracy']:.1%} "
            f"| {b['ece']:.1%} → {a['ece']:.1%} "
            f"| {a['ece_shown']:.1%} ({a['ece_shown_floor']:.1%}) "
            f"| {a['imagenet_breed_named_right']:.1%} |"
        )
    m, g = report["mean"], report["gate"]
    return "\n".join(
        [
            "## Honest answers outside the trained breeds (`bench/open_set_bench.py`, issue 19, "
            f"{report['backbone']})",
            "",
            f"Machine: {report['machine']}. Backbone {report['backbone']} (LiteRT float "
            "bottlenecks, cached), the retrain's defaults, pets-dev with half the cat, half the "
            "dog or half of all breeds held out (seeds 0 and 1). In-set photos answered out of "
            "fold; held-out breeds by the layer trained on all in-set photos. Before = 19f5adb "
            "(the top trained class, always). Tuned on these dev photos only; the goals are for "
            "photos nobody here has seen.",
            "",
            *rows,
            "",
            f"Means: species errors {m['species_errors']:.1%} (goal ≤ 1 %), untrained answered as "
            f"trained {m['untrained_claimed']:.1%} (goal ≤ 30 %), in-set accuracy drop "
            f"{m['in_set_accuracy_drop']:.1%} points (goal ≤ 2), ECE {m['ece']:.1%} (goal ≤ 3 %). "
            f"Species errors before: {m['species_errors_before']:.1%}. Gate, with each "
            'scenario\'s layer and "maybe a pet" kept only with the evidence of a trained breed '
            f"(openset.gated): {m['gate_refused_pets']:.1%} of pets refused, flowers-dev passed "
            f"{m['flowers_passed_gate']:.1%} (goal ≤ 1 % each way); the gate alone on all 599 "
            f"pets: {g['gate_refused_pets']:.1%} refused, flowers passed "
            f"{g['gate_passed_flowers']:.1%} if the layer were always sure; species rule alone on "
            f"all 599 pets: {g['species_errors_all_pets']:.1%} wrong.",
            "",
            "ECE = 15 equal-width bins over the out-of-fold in-set answers (the layer's top "
            "probability after the temperature, all classes). ECE of the shown score = the same "
            "estimator on the score the bot shows with each trained in-set answer (its species' "
            "classes, out of fold, capped when not sure) against whether the breed was right: "
            f"{m['ece_shown']:.1%} (10 equal-mass bins: {m['ece_shown_equal_mass']:.1%}). "
            "Floor = the 15-bin ECE that a perfectly calibrated score would still show on the "
            f"same photos (mean of {FLOOR_DRAWS} draws): {m['ece_shown_floor']:.1%}; with about "
            "110 to 310 shown answers per scenario, the goal of 3 % sits "
            f"{'below' if m['ece_shown_floor'] > GOALS['ece'] else 'above'} that floor. Tried in "
            "session calib (Lite0, means of the six scenarios, maps cross-fitted so the ECE stays "
            "out of fold): on the shown score, isotonic regression 4.5 % and Platt scaling 5.1 % "
            'against 5.4 % with no map; before the "not sure" cap (the score never above the '
            "gate's pet probability) the shown score's ECE is 3.8 %, and isotonic 5.1 % / Platt "
            "3.8 % there, on the open-set evidence 5.5 % / 4.6 %. Shown scores under 50 % are "
            "right about 80 % of the time (the cap lowers many of them). On this few photos a "
            "fitted map adds about as much variance as it removes bias, so the product keeps the "
            "temperature alone and the cap the issue asks for. "
            "Same species = held-out breeds of a species the version was trained on: within "
            "cats, unseen breeds sit as close to the trained ones as those do to each other.",
            "",
            "```json",
            json.dumps({"mean": m, "gate": g, "goals": GOALS}, indent=2),
            "```",
        ]
    )


def main() -> None:
    """Run every scenario and write the results."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--home", type=Path, default=backbones.default_home())
    parser.add_argument("--backbone", default=DEFAULT_BACKBONE, help="(the section names it)")
    args = parser.parse_args()
    photos = Photos(args.home, args.backbone)
    classes = sorted(set(photos.labels))
    hp = HParams()
    scenarios = {}
    for seed in range(args.seeds):
        for name, trained in _scenarios(classes, seed).items():
            scenarios[name] = run_scenario(photos, [str(c) for c in trained], hp)
            print(name, json.dumps(scenarios[name]["after"]), flush=True)
    mean = {
        k: _mean(scenarios, "after", k)
        for k in ("species_errors", "untrained_claimed", "in_set_accuracy", "ece", "ece_shown")
    }
    for k in ("ece_shown_equal_mass", "ece_shown_floor"):
        mean[k] = _mean(scenarios, "after", k)
    mean["in_set_accuracy_before"] = _mean(scenarios, "before", "in_set_accuracy")
    mean["in_set_accuracy_drop"] = round(
        mean["in_set_accuracy_before"] - mean["in_set_accuracy"], 4
    )
    mean["ece_before"] = _mean(scenarios, "before", "ece")
    mean["species_errors_before"] = _mean(scenarios, "before", "species_errors")
    mean["flowers_passed_gate"] = _mean(scenarios, "after", "flowers_passed_gate")
    mean["gate_refused_pets"] = _mean(scenarios, "after", "gate_refused_pets")
    report = {"bench": "open_set", "machine": machine(), "backbone": args.backbone,
              "gate": _gate_rates(photos), "mean": mean, "scenarios": scenarios,
              "goals": GOALS}  # fmt: skip
    suffix = "" if args.backbone == DEFAULT_BACKBONE else f"_{args.backbone}"
    results = RESULTS.with_name(f"{RESULTS.stem}{suffix}.json")
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps(report, indent=2), "utf-8")
    update_section(f"open_set_bench{suffix}", _markdown(report))
    print(json.dumps({"mean": mean, "gate": report["gate"]}, indent=2))


if __name__ == "__main__":
    main()
