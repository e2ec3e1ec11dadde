"""`breedbot eval --html`: one self-contained page (images as data URIs, no scripts, no links)
with the accuracy, per-class accuracy, the confusion matrix and the mistakes as pictures.
"""

from __future__ import annotations

import base64
from html import escape
from pathlib import Path
from typing import Any

from model.data import display_name
from model.mistakes import MAX_TILES, contact_sheet

STYLE = (
    "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
    "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}"
    "th{background:#f4f4f4}td.name,th.name{text-align:left}"
)


def _per_class(per_class: dict[str, Any]) -> str:
    rows = "".join(
        f'<tr><td class="name">{escape(display_name(label))}</td>'
        f"<td>{'–' if v['accuracy'] is None else format(v['accuracy'], '.1%')}</td>"
        f"<td>{v['n']}</td></tr>"
        for label, v in per_class.items()
    )
    return (
        '<h2>Per-class accuracy</h2><table><tr><th class="name">class</th><th>accuracy</th>'
        f"<th>photos</th></tr>{rows}</table>"
    )


def _confusion(matrix: list[list[int]], labels: list[str]) -> str:
    names = [escape(display_name(label)) for label in labels]
    head = "".join(f"<th>{name}</th>" for name in names)
    rows = []
    for name, row in zip(names, matrix, strict=True):
        total = sum(row) or 1
        # Shade by the row's share, so small classes stay readable (as the chat's PNG does).
        cells = "".join(
            f'<td style="background:rgba(40,90,200,{count / total:.2f})">{count}</td>'
            for count in row
        )
        rows.append(f'<tr><th class="name">{name}</th>{cells}</tr>')
    return (
        "<h2>Confusion matrix</h2><p>Rows: true class; columns: answer.</p>"
        f'<table><tr><th class="name"></th>{head}</tr>{"".join(rows)}</table>'
    )


def html_report(report: dict[str, Any], root: Path) -> str:
    """The page for an `evaluate` report whose photos lie under `root`."""
    labels = list(report["per_class"])
    mistakes = report["misclassified"]
    sheet = contact_sheet(root, mistakes)
    if sheet is None:
        pictures = "<p>No mistakes.</p>"
    else:
        uri = "data:image/jpeg;base64," + base64.b64encode(sheet).decode("ascii")
        shown = min(len(mistakes), MAX_TILES)
        pictures = f'<p>{shown} of {len(mistakes)}, most confident first.</p><img src="{uri}">'
    return (
        '<!doctype html><html><head><meta charset="utf-8">'
        f"<title>breedbot eval: {escape(str(report['model']))}</title>"
        f"<style>{STYLE}</style></head><body>"
        f"<h1>Accuracy {report['accuracy']:.1%} (N={report['n']})</h1>"
        f"<p>Model: {escape(str(report['model']))}</p>"
        f"{_per_class(report['per_class'])}"
        f"{_confusion(report['confusion_matrix'], labels)}"
        f"<h2>Mistakes</h2>{pictures}</body></html>"
    )
