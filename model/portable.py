"""Run an exported model file alone (no TensorFlow): `.tflite` through LiteRT, `.onnx` through
ONNX Runtime, with the labels beside it (labels.txt) or embedded (ONNX metadata).

Also the words of the bundle's README.txt, whose snippet tests/test_export.py runs as written.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model.runtime.images import decode_image

LABELS_FILE = "labels.txt"
README_FILE = "README.txt"
ONNX_FILE = "model.onnx"
LABELS_KEY = "breedbot.labels"  # ONNX metadata entry: the labels as a JSON list
PROBE_SIDE = 32  # a blank photo run once to read the model's image_size output


def portable_file(precision: str) -> str:
    """The .tflite name a bundle uses for a precision: model_float.tflite or model_int8.tflite."""
    return f"model_{precision}.tflite"


def labels_metadata(labels: list[str]) -> dict[str, str]:
    """The labels as ONNX metadata entries."""
    return {LABELS_KEY: json.dumps(labels, ensure_ascii=False)}


SNIPPET = """\
import sys
import numpy as np
from PIL import Image, ImageOps
from ai_edge_litert.interpreter import Interpreter
labels = open("labels.txt", encoding="utf-8").read().splitlines()
photo = ImageOps.exif_transpose(Image.open(sys.argv[1])).convert("RGB")
pixels = np.asarray(photo.resize(({size}, {size}), Image.Resampling.BILINEAR), np.uint8)
out = Interpreter(model_path="{model}").get_signature_runner()(image=pixels[None])
for i in np.argsort(-out["probabilities"][0])[:5]:
    print(labels[i], round(float(out["probabilities"][0][i]), 5))
"""


def readme_text(files: list[str], image_size: int, has_gate: bool, backbone: str) -> str:
    """README.txt of an export: input, outputs and a runnable LiteRT snippet."""
    tflite = next((f for f in files if f.endswith(".tflite")), portable_file("float"))
    gate = (
        "- pet_probability: float32 [1], the chance that the photo shows a cat or a dog at all "
        "(the backbone's ImageNet classes; below 0.5, breedbot says it sees no pet)\n"
        if has_gate
        else "- pet_probability: float32 [1], always -1 (this backbone has no ImageNet head)\n"
    )
    return (
        f"breedbot export: {', '.join(files)} and labels.txt ({backbone})\n\n"
        "INPUT\n"
        '- "image": uint8 [1, H, W, 3], one RGB photo of any size, values 0..255.\n'
        f"- Resizing to {image_size}x{image_size} (squashed, not cropped) and scaling to 0..1 "
        "happen inside the model.\n"
        f"- For breedbot's answers, resize to {image_size}x{image_size} yourself first "
        "with Pillow's BILINEAR filter after turning the photo upright (EXIF), as below: the "
        "model's own resize is plain bilinear, so a larger photo gives close but not identical "
        "probabilities.\n\n"
        "OUTPUTS\n"
        "- probabilities: float32 [1, N], one per line of labels.txt, in that order; sum 1.\n"
        f"{gate}"
        f"- image_size: int32 [2], always [{image_size}, {image_size}]: the size it resizes to.\n"
        "- breedbot's chat answer adds one step on top of these probabilities: it keeps only "
        "the breeds of the species ImageNet sees (cat or dog), and says 'not one of my breeds' "
        "when the evidence is weak. This file gives the model's own probabilities.\n\n"
        "RUN IT (pip install ai-edge-litert pillow numpy; python run.py photo.jpg)\n"
        f"{SNIPPET.format(size=image_size, model=tflite)}\n"
        "Or with breedbot: breedbot label-image --model " + f"{tflite} --image photo.jpg\n"
    )


@dataclass(frozen=True)
class Answer:
    """One photo's answer from an exported file."""

    probabilities: np.ndarray  # [N], in label order
    pet_probability: float | None  # None when the model has no gate


class PortableModel:
    """An exported .tflite or .onnx file with its labels."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        if self.path.suffix == ".onnx":
            import onnxruntime

            self._session = onnxruntime.InferenceSession(
                str(self.path), providers=["CPUExecutionProvider"]
            )
            embedded = self._session.get_modelmeta().custom_metadata_map.get(LABELS_KEY)
            self._run = self._run_onnx
        elif self.path.suffix == ".tflite":
            from ai_edge_litert.interpreter import Interpreter

            self._runner = Interpreter(model_path=str(self.path)).get_signature_runner()
            embedded = None
            self._run = self._run_litert
        else:
            raise ValueError(f"{self.path.name}: expected a .tflite or .onnx file")
        self.labels = self._labels(embedded)
        # The side breedbot resizes photos to for this model: a constant output of the graph.
        probe = self._run(np.zeros((1, PROBE_SIDE, PROBE_SIDE, 3), np.uint8))
        self.image_size = int(probe["image_size"][0])

    def _labels(self, embedded: str | None) -> list[str]:
        beside = self.path.with_name(LABELS_FILE)
        if beside.is_file():
            return beside.read_text("utf-8").splitlines()
        if embedded is not None:
            return list(json.loads(embedded))
        raise FileNotFoundError(f"no {LABELS_FILE} beside {self.path} and none embedded in it")

    def _run_onnx(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        names = ["probabilities", "pet_probability", "image_size"]
        return dict(zip(names, self._session.run(names, {"image": pixels}), strict=True))

    def _run_litert(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        return self._runner(image=pixels)

    def answer(self, pixels: np.ndarray) -> Answer:
        """Probabilities (and the pet gate) for one uint8 RGB photo [H, W, 3]."""
        out = self._run(np.ascontiguousarray(pixels, np.uint8)[None])
        pet = float(out["pet_probability"][0])
        return Answer(out["probabilities"][0], None if pet < 0 else pet)

    def answer_bytes(self, data: bytes) -> Answer:
        """Decode a photo as breedbot does (upright, squashed with Pillow) and answer it."""
        return self.answer(decode_image(data, self.image_size))
