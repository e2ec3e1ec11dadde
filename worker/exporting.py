"""/export: a version's portable .tflite, labels.txt and README.txt, as bytes for the chat.

The conversion needs TensorFlow, so it runs in a child process (worker/child.py) like a retrain;
this side imports neither. The files go back in the task's result, each capped at the Bot API's
upload limit: the bot and the worker share no disk.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import contract
from model.hparams import DEFAULT_BACKBONE
from model.runtime.home import default_home
from store.blobs import StoreError
from store.registry import ZERO_SHOT, RegistryError
from worker import child, storage, versions
from worker.settings import WorkerSettings


def run_in_child(
    request: contract.ExportRequest, settings: WorkerSettings
) -> contract.ExportResult:
    """`export` in a child process: TensorFlow and its memory leave with it."""
    return child.run("worker.exporting:export", (request, settings), lambda _: None)


def export(
    request: contract.ExportRequest, settings: WorkerSettings, emit: Callable[[Any], None]
) -> contract.ExportResult:
    """Convert version N (or the active one) and read its files; Refused if there is none."""
    from model.export import export_portable, load_source
    from worker.tf_jobs import convert_zero_shot

    reg = storage.registry(settings)
    version = reg.active_version() if request.version is None else request.version
    home = settings.breedbot_home or default_home()

    def convert(handle: str, where: Path) -> None:
        convert_zero_shot(handle, where, lambda _: None)

    try:
        folder = versions.folder(reg, version, settings.models_root, home, convert)
    except RegistryError as exc:
        raise contract.Refused(str(exc), exc.code, exc.params) from exc
    except StoreError as exc:
        raise versions.refusal(exc) from exc
    backbone = DEFAULT_BACKBONE  # the zero-shot model's, as the workers serve it
    source = load_source(None if version == ZERO_SHOT else folder, home=home, backbone=backbone)
    with tempfile.TemporaryDirectory(prefix="breedbot-export-") as tmp:
        files = export_portable(source, Path(tmp))
        sizes = {path.name: path.stat().st_size for path in files}
        documents = {
            path.name: contract.encode_bytes(path.read_bytes())
            for path in files
            if sizes[path.name] <= contract.MAX_UPLOAD_BYTES
        }
    too_big = {name: size for name, size in sizes.items() if name not in documents}
    return contract.ExportResult(version, documents, too_big)
