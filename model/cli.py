"""`breedbot retrain | label-image | eval | export`: a thin argparse layer over the library.

Flag names are retrain.py's and label_image.py's, so codelab commands carry over unchanged.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from contract import options
from model.hparams import DEFAULT_BACKBONE, HParams

if TYPE_CHECKING:
    from model.runtime.classifier import Classifier, Prediction

DEFAULT_MODEL = "default (zero-shot ImageNet cats and dogs)"


def home_dir() -> Path:
    """BREEDBOT_HOME, or the user's cache folder: where backbones and bottlenecks live."""
    from model.runtime.home import default_home  # not model.backbones: that imports TensorFlow

    env = os.environ.get("BREEDBOT_HOME")
    return Path(env).expanduser() if env else default_home()


def _arg_type(option: options.Option) -> Callable[[str], Any]:
    """argparse `type=` for an option: its parser, with the table's wording on a bad value."""

    def parse(raw: str) -> Any:
        try:
            return option.parse(raw, f"--{option.name}")
        except options.OptionError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    parse.__name__ = option.name  # argparse names the type in its messages
    return parse


def add_retrain_args(p: argparse.ArgumentParser) -> None:
    """retrain.py's flags, with HParams' defaults and the option table's types, ranges and help."""
    defaults = HParams()
    p.add_argument(
        "--image_dir", type=Path, required=True, help="class folders, labels.csv or .zip"
    )
    p.add_argument("--labels_csv", type=Path, help="Kaggle-style id,breed CSV for --image_dir")
    p.add_argument("--output_graph", type=Path, default=Path("runs/retrained"), help="model folder")
    p.add_argument("--output_labels", type=Path, help="extra copy of retrained_labels.txt")
    p.add_argument("--summaries_dir", type=Path, help="extra copy of the TensorBoard logs")
    p.add_argument("--bottleneck_dir", type=Path, help="bottleneck cache (default: $BREEDBOT_HOME)")
    p.add_argument(
        "--tfhub_module",
        "--architecture",
        default=defaults.tfhub_module,
        help=(
            f"{DEFAULT_BACKBONE}, efficientnet_lite1, efficientnet_lite2, mobilenet_v1_100_224, "
            "auto (the best of several by cross-validation), a TF Hub URL or a SavedModel path"
        ),
    )
    for option in options.HPARAMS:
        default = getattr(defaults, option.name)
        extra: dict[str, Any] = {"nargs": "?", "const": True} if option.kind is bool else {}
        help_text = option.help.replace("%", "%%")  # argparse formats help with %
        if option.low is not None:
            help_text += f" ({option.low:g}..{option.high:g})"
        p.add_argument(
            f"--{option.name}",
            type=_arg_type(option),
            default=default,
            help=help_text,
            metavar=option.kind.__name__.upper(),
            **extra,
        )


def cmd_retrain(args: argparse.Namespace) -> int:
    """Run a retrain and print retrain.py-style output."""
    from tqdm import tqdm

    from model import train

    names = {f.name for f in dataclasses.fields(HParams)}
    hp = HParams(**{k: v for k, v in vars(args).items() if k in names})
    bars: dict[str, tqdm] = {}

    def progress(stage: str, done: int, total: int, val_acc: float | None) -> None:
        bar = bars.get(stage)
        if bar is None:
            bar = bars[stage] = tqdm(total=total, desc=stage, unit="step", leave=True)
        bar.total = total
        bar.n = done
        if val_acc is not None:
            bar.set_postfix(validation_accuracy=f"{val_acc:.1%}")
        bar.refresh()

    try:
        result = train.retrain(
            args.image_dir,
            args.output_graph,
            hp,
            labels_csv=args.labels_csv,
            bottleneck_dir=args.bottleneck_dir,
            home=home_dir(),
            summaries_dir=args.summaries_dir,
            output_labels=args.output_labels,
            progress=progress,
        )
    finally:
        for bar in bars.values():
            bar.close()
    for path, reason in result.skipped:
        print(f"Skipped {path}: {reason}")
    print(
        f"Bottlenecks: {result.bottlenecks_computed} computed, "
        f"{result.bottlenecks_cached} from cache"
    )
    if hp.print_misclassified_test_images:
        print("=== MISCLASSIFIED TEST IMAGES ===")
        for m in result.metrics["misclassified"]:
            print(f"{m['image']:>50}  {m['predicted']} (true: {m['label']})")
    m = result.metrics
    if m["accuracy_source"] == "test_split":
        print(f"Final test accuracy = {result.test_accuracy:.1%} (N={m['n_test']})")
    else:
        cv = m["cross_validation"]
        print(
            f"Cross-validated accuracy = {cv['accuracy']:.1%} ± {cv['std']:.1%} "
            f"({cv['k']} folds, N={m['n_validation']}); the model is trained on all of them"
        )
    print(f"Model written to {result.output_dir}")
    return 0


def label_with_file(args: argparse.Namespace) -> int:
    """label-image --model: the same lines from an exported .onnx or .tflite file alone."""
    from model.portable import PortableModel
    from model.runtime.images import ImageError

    exported = PortableModel(args.model)
    failed = False
    for path in args.image:
        if len(args.image) > 1:
            print(f"{path}:")
        try:
            answer = exported.answer_bytes(Path(path).read_bytes())
        except ImageError as error:
            print(f"error: {error}")
            failed = True
            continue
        for i in answer.probabilities.argsort(kind="stable")[::-1][: args.top_k]:
            print(f"{exported.labels[i]} (score = {answer.probabilities[i]:.5f})")
        if answer.pet_probability is not None:
            gate = "yes" if answer.pet_probability >= 0.5 else "no"
            print(f"# cat or dog: {gate} (p = {answer.pet_probability:.3f})")
    return 1 if failed else 0


def cmd_label_image(args: argparse.Namespace) -> int:
    """label_image.py: the top-5 labels of one or more images."""
    from model.predict import load_classifier

    if args.model is not None:
        return label_with_file(args)

    clf = load_classifier(args.graph, home=home_dir(), backbone=args.tfhub_module)
    if args.json:
        return _print_answers(clf, args.image)
    preds = clf.predict([Path(p).read_bytes() for p in args.image], top_k=args.top_k)
    for path, pred in zip(args.image, preds, strict=True):
        if len(args.image) > 1:
            print(f"{path}:")
        if pred.error:
            print(f"error: {pred.error_message}")
            continue
        for g in pred.top_k:
            print(f"{g.label} (score = {g.probability:.5f})")
        if pred.is_pet is not None:
            gate = "yes" if pred.is_pet else "no"
            print(f"# cat or dog: {gate} (p = {pred.pet_probability:.3f}); ", end="")
            print(f"ImageNet: {pred.imagenet_label} ({pred.imagenet_probability:.3f})")
    return 1 if any(p.error for p in preds) else 0


def answer_json(image: str, prediction: Prediction) -> dict[str, Any]:
    """One `label-image --json` line: the same decision the bot's reply words."""
    if prediction.error:
        return {"image": image, "error": prediction.error}
    a = prediction.answer
    return {
        "image": image,
        "species": a.species,
        "breed": a.label,
        "trained": a.trained,
        "score": round(a.score, 6),
    }


def _print_answers(clf: Classifier, images: list[Path]) -> int:
    """One JSON object per image, in order; an unreadable file gets an error code, not a raise."""
    failed = False
    for path in images:
        try:
            data = Path(path).read_bytes()
        except OSError:
            print(json.dumps({"image": str(path), "error": "unreadable"}), flush=True)
            failed = True
            continue
        (prediction,) = clf.predict([data], top_k=1)
        failed |= prediction.error is not None
        print(json.dumps(answer_json(str(path), prediction), ensure_ascii=False), flush=True)
    return 1 if failed else 0


def cmd_eval(args: argparse.Namespace) -> int:
    """Accuracy of a model folder on another labeled image set."""
    from model.evaluate import evaluate

    report = evaluate(
        args.graph, args.image_dir, labels_csv=args.labels_csv, home=home_dir(), html=args.html
    )
    if args.json:
        print(json.dumps(report, ensure_ascii=False))
        return 0
    for path, reason in report["skipped"]:
        print(f"Skipped {path}: {reason}")
    print(f"Accuracy = {report['accuracy']:.1%} (N={report['n']})")
    for label, v in report["per_class"].items():
        acc = "-" if v["accuracy"] is None else f"{v['accuracy']:.1%}"
        print(f"  {label:<30} {acc:>7}  (n={v['n']})")
    print("Confusion matrix (rows = true, columns = predicted):")
    for row in report["confusion_matrix"]:
        print("  " + " ".join(f"{c:3d}" for c in row))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Write TFLite float and int8 (dynamic-range) models next to the SavedModel."""
    from model.export import export_tflite

    if args.onnx:
        return export_onnx(args)
    if not args.tflite:
        print("nothing to do: pass --tflite or --onnx", file=sys.stderr)
        return 2
    for path in export_tflite(args.graph):
        print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0


def export_onnx(args: argparse.Namespace) -> int:
    """export --onnx: the portable bundle (ONNX, the served .tflite, labels, README)."""
    from model.export import export_portable, load_source

    source = load_source(args.graph, home=home_dir())
    out = args.out or args.graph / "export"
    for path in export_portable(source, out, ("tflite", "onnx")):
        print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0


def add_subcommands(sub: argparse._SubParsersAction) -> None:
    """Register the ML commands on a parent parser (the service CLI reuses this)."""
    p = sub.add_parser("retrain", help="train a new softmax layer on labeled images")
    add_retrain_args(p)
    p.set_defaults(func=cmd_retrain)

    p = sub.add_parser("label-image", help="classify images (label_image.py)")
    p.add_argument("--graph", type=Path, help=f"model folder; default: {DEFAULT_MODEL}")
    p.add_argument("--image", type=Path, nargs="+", required=True)
    p.add_argument("--top_k", type=int, default=5)
    p.add_argument("--tfhub_module", "--architecture", default=DEFAULT_BACKBONE)
    p.add_argument("--model", type=Path, help="an exported .onnx or .tflite file, run alone")
    p.add_argument("--json", action="store_true", help="one JSON answer per image, in order")
    p.set_defaults(func=cmd_label_image)

    p = sub.add_parser("eval", help="accuracy of a model on a labeled image set")
    p.add_argument("--graph", type=Path, required=True)
    p.add_argument("--image_dir", type=Path, required=True)
    p.add_argument("--labels_csv", type=Path)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--html", type=Path, help="also write this page, the mistakes as pictures")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("export", help="export a model folder")
    p.add_argument("--graph", type=Path, required=True)
    p.add_argument("--tflite", action="store_true", help="float and int8 .tflite files")
    p.add_argument(
        "--onnx", action="store_true", help="model.onnx, .tflite, labels, README (uint8 input)"
    )
    p.add_argument("--out", type=Path, help="folder for --onnx; default: GRAPH/export")
    p.set_defaults(func=cmd_export)


def build_parser() -> argparse.ArgumentParser:
    """The `breedbot` parser with the ML commands."""
    parser = argparse.ArgumentParser(prog="breedbot", description=__doc__)
    add_subcommands(parser.add_subparsers(dest="command", required=True))
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `breedbot` console script."""
    from model.data import DatasetError
    from model.train import AccuracyGateError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (DatasetError, AccuracyGateError, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
