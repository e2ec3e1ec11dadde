"""Accuracy of a model folder on a labeled image set (`breedbot eval`)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from model import data, metrics
from model.predict import load_classifier
from model.report_html import html_report


def evaluate(
    model_dir: Path,
    image_dir: Path,
    *,
    labels_csv: Path | None = None,
    home: Path | None = None,
    batch_size: int = 32,
    html: Path | None = None,
) -> dict:
    """Accuracy, per-class accuracy and confusion matrix; images of unknown classes are skipped.

    `html`: also write them, with the mistakes as pictures, as one self-contained page.
    """
    clf = load_classifier(Path(model_dir), home=home)
    index = {label: i for i, label in enumerate(clf.labels)}
    with tempfile.TemporaryDirectory(prefix="breedbot-eval-") as tmp:
        dataset = data.load_dataset(
            Path(image_dir), labels_csv=labels_csv, extract_dir=Path(tmp), min_images_per_class=1
        )
        skipped = list(dataset.skipped)
        unknown = sorted(set(dataset.classes) - set(index))
        skipped += [(c, "class unknown to the model") for c in unknown]
        items = [im for im in dataset.images if im.label in index]
        if not items:
            raise data.DatasetError(
                "no_known_classes", folder=str(image_dir), known=", ".join(clf.labels[:10])
            )
        probs, truth, names = [], [], []
        for start in range(0, len(items), batch_size):
            chunk = items[start : start + batch_size]
            preds = clf.predict([im.path.read_bytes() for im in chunk], top_k=len(clf.labels))
            for im, pred in zip(chunk, preds, strict=True):
                if pred.error:
                    skipped.append((str(im.path.relative_to(dataset.root)), pred.error_message))
                    continue
                row = np.zeros(len(clf.labels))
                for g in pred.top_k:
                    row[index[g.label]] = g.probability
                probs.append(row)
                truth.append(index[im.label])
                names.append(str(im.path.relative_to(dataset.root)))
        report = metrics.summarize(np.array(truth), np.array(probs), clf.labels, names)
        report["skipped"] = [list(s) for s in skipped]
        report["model"] = str(model_dir)
        if html is not None:  # while the photos are here (a zip is extracted for this run)
            Path(html).write_text(html_report(report, dataset.root), "utf-8")
    return report
