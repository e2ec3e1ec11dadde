"""Find labelled images in a folder, a Kaggle-style labels.csv or a zip, and split them by content.

Accepted layouts: one folder per class (retrain.py's layout, nested subfolders allowed), a
`labels.csv` (`id,breed`) next to an image folder, or a `.zip` of either. Files are judged by
their content, never by their extension. Numpy-free and TensorFlow-free: cheap to import.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import shutil
import stat
import tempfile
import unicodedata
import zipfile
import zlib
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import ClassVar

from model.problems import Problem
from model.runtime.images import ImageError, probe_image

LABELS_CSV = "labels.csv"
_IGNORED_NAMES = {"__MACOSX", ".DS_Store", "Thumbs.db", "desktop.ini"}
_ID_COLUMNS = ("id", "image", "file", "filename")
_LABEL_COLUMNS = ("label", "breed", "class")
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
_SKIP_REASONS = {"empty": "empty file", "not_an_image": "not an image"}
_CHUNK = 1 << 16
# Tiny files (a blank thumbnail, a text note) compress far beyond any sane ratio yet cannot hurt;
# only entries above this size are held to ZipLimits.max_ratio.
_RATIO_FLOOR = 1 << 20
# Longest class name: 60 characters of up to 4 UTF-8 bytes fit a 255-byte file name.
MAX_CLASS_NAME = 60
# Bidirectional overrides, embeddings, isolates and marks: they make a name read as another.
_BIDI_CONTROLS = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)

# (file, label) pairs to check, and (file or "labels.csv row N", reason) pairs left out.
_Candidates = list[tuple[Path, str]]
_Skipped = list[tuple[Path | str, str]]


class DatasetError(Problem, ValueError):
    """A dataset that cannot be trained on; the message says what to fix."""

    messages: ClassVar[dict[str, str]] = {
        "zip_empty": "The zip archive is empty: put the class folders or labels.csv in it.",
        "zip_too_many_files": (
            "Zip refused: {files} files and folders, the limit is {limit}. Upload fewer images."
        ),
        "zip_too_large": "Zip refused: it unpacks to {total} bytes, the limit is {limit}.",
        "zip_encrypted": (
            "The zip archive is password-protected ({name!r}); upload it without a password."
        ),
        "zip_bomb": (
            "Zip refused: {name!r} expands {size} bytes from {packed}, more than {ratio}x "
            "(a zip bomb?)."
        ),
        "zip_lying_header": "Zip refused: {name!r} unpacks to more than its header says.",
        "zip_unreadable": "The zip archive cannot be read: {detail}",
        "csv_column": "{csv} needs a column named {wanted}; its header is {header}.",
        "csv_no_image_dir": "Image folder {folder} for {csv} does not exist.",
        "csv_not_utf8": "{csv} is not UTF-8 text: {detail}",
        "csv_files_missing": (
            "None of the {rows} files listed in {csv} were found in {folder} (first: {first}). "
            "Put the images next to it or in train/."
        ),
        "class_control_characters": "Class name {label!r} contains control characters; rename it.",
        "class_name_path": (
            "Class name {label!r} cannot name a folder (a slash, or a leading dot); rename it."
        ),
        "class_name_too_long": (
            "Class name {label!r} is {length} characters long; the limit is {limit}. Shorten it."
        ),
        "class_name_bidi": (
            "Class name {label!r} contains text-direction controls, which can disguise it; "
            "rename it."
        ),
        "class_names_clash": (
            "Classes {first!r} and {second!r} would both be shown as {shown!r}; rename or merge "
            "them."
        ),
        "not_found": "{source} does not exist.",
        "not_folder_or_zip": "{name} is neither a folder nor a zip archive.",
        "no_images": "No usable images found in {folder}.",
        "no_usable_images": (
            "No usable images found in {folder} ({skipped} files skipped, e.g. {example}: "
            "{reason})."
        ),
        "one_class": (
            "Need at least 2 classes, found {found}: {classes}. Put each class's images in its "
            "own folder."
        ),
        "too_few_images": "Each class needs at least {min} usable images: {short}.",
        "no_known_classes": (
            "None of the classes in {folder} are known to the model (it knows: {known}...)."
        ),
        "no_training_images": (
            "No readable training images left for class(es) {classes}; add more images or "
            "remove the class."
        ),
    }


@dataclass(frozen=True)
class ZipLimits:
    """Caps applied to an uploaded archive before and while it is extracted."""

    max_files: int = 20_000
    max_total_bytes: int = 2 * 1024**3
    max_ratio: int = 200


@dataclass(frozen=True)
class LabeledImage:
    """One usable image file and its class."""

    path: Path
    label: str
    sha256: str


@dataclass
class Dataset:
    """Usable images by class, plus every file left out and why (relative path, reason)."""

    root: Path
    classes: list[str]
    images: list[LabeledImage]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    # The folder a zip was unpacked into (None for folders); the caller deletes it when done.
    extracted_to: Path | None = None

    @property
    def fingerprint(self) -> str:
        """SHA-256 over the sorted (label, content hash) pairs: equal for equal training data."""
        pairs = sorted((image.label, image.sha256) for image in self.images)
        return hashlib.sha256(json.dumps(pairs).encode()).hexdigest()


def display_name(label: str) -> str:
    """Turn a class label into a human name: "german_shorthaired" -> "German shorthaired"."""
    words = " ".join(re.sub(r"[_\-]+", " ", label).split())
    return words[:1].upper() + words[1:] if words else label


def shown_names(labels: list[str]) -> str:
    """Class labels as a user reads them in a message: "Siamese cat, Pug"."""
    return ", ".join(map(display_name, labels))


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks."""
    with open(path, "rb") as fp:
        return hashlib.file_digest(fp, "sha256").hexdigest()


def _ignored(name: str) -> bool:
    """Hidden files and OS litter that no user means as data."""
    return name.startswith(".") or name in _IGNORED_NAMES


def _walk_files(folder: Path) -> list[Path]:
    """All non-ignored files under a folder, sorted, without following directory symlinks."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not _ignored(d))
        found += [Path(dirpath, f) for f in sorted(filenames) if not _ignored(f)]
    return found


def _is_zip(path: Path) -> bool:
    """True when the file starts like a zip archive, whatever its name."""
    with open(path, "rb") as fp:
        return fp.read(4) in _ZIP_MAGIC


def _safe_member_path(name: str) -> PurePosixPath | None:
    """The relative path an archive entry may be written to, or None if it would escape."""
    name = name.replace("\\", "/")
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name) or "\x00" in name:
        return None
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        return None
    return PurePosixPath(*parts)


def _is_dir(info: zipfile.ZipInfo) -> bool:
    # ZipInfo.is_dir() raises IndexError on an entry with an empty name (found by Hypothesis).
    return info.filename.endswith("/")


def _check_central_directory(infos: list[zipfile.ZipInfo], limits: ZipLimits) -> None:
    """Refuse archives whose declared sizes already break the limits."""
    files = [info for info in infos if not _is_dir(info)]
    if not files:
        raise DatasetError("zip_empty")
    # Folder entries count too: 60,000 of them in 5.4 MB each cost a mkdir and a directory walk.
    if len(infos) > limits.max_files:
        raise DatasetError("zip_too_many_files", files=len(infos), limit=limits.max_files)
    total = sum(info.file_size for info in files)
    if total > limits.max_total_bytes:
        raise DatasetError("zip_too_large", total=total, limit=limits.max_total_bytes)
    for info in files:
        if info.flag_bits & 0x1:
            raise DatasetError("zip_encrypted", name=info.filename)
        if info.file_size > _RATIO_FLOOR and info.file_size > limits.max_ratio * max(
            info.compress_size, 1
        ):
            raise DatasetError(
                "zip_bomb",
                name=info.filename,
                size=info.file_size,
                packed=info.compress_size,
                ratio=limits.max_ratio,
            )


def _copy_entry(zf: zipfile.ZipFile, info: zipfile.ZipInfo, dest: Path) -> bool:
    """Stream one entry to dest; False (and nothing written) if it is itself a zip archive."""
    written = 0
    with zf.open(info) as src, open(dest, "xb") as out:
        while chunk := src.read(_CHUNK):
            if written == 0 and chunk[:4] in _ZIP_MAGIC:
                break
            written += len(chunk)
            # The limits were checked against declared sizes, so the real bytes must not exceed
            # them. zipfile stops at the declared size today; this keeps a lying header harmless
            # even if that ever changes.
            if written > info.file_size:
                raise DatasetError("zip_lying_header", name=info.filename)
            out.write(chunk)
        else:
            return True
    dest.unlink()
    return False


def _extract_entry(zf: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path) -> str | None:
    """Extract one entry if it is safe; return why it was left out, or None."""
    rel = _safe_member_path(info.filename)
    kind = stat.S_IFMT(info.external_attr >> 16)
    if rel is None:
        return "unsafe path in archive (not extracted)"
    if any(_ignored(part) for part in rel.parts):
        return None
    if kind == stat.S_IFLNK:
        return "symbolic link in archive (not extracted)"
    if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
        return "not a regular file (not extracted)"
    dest = target.joinpath(rel)
    try:
        if _is_dir(info):
            dest.mkdir(parents=True, exist_ok=True)
            return None
        dest.parent.mkdir(parents=True, exist_ok=True)
        copied = _copy_entry(zf, info, dest)
    except (FileExistsError, NotADirectoryError, IsADirectoryError):
        return "another entry has the same name (not extracted)"
    return None if copied else "nested archive (not extracted)"


def _extract_zip(archive: Path, target: Path, limits: ZipLimits) -> list[tuple[str, str]]:
    """Extract an untrusted zip into target safely; return the entries left out and why."""
    skipped = []
    try:
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            _check_central_directory(infos, limits)
            for info in infos:
                reason = _extract_entry(zf, info, target)
                if reason:
                    skipped.append((info.filename, reason))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, zlib.error) as exc:
        raise DatasetError("zip_unreadable", detail=str(exc)) from exc
    return skipped


def _unpack(
    archive: Path, extract_dir: Path | None, limits: ZipLimits
) -> tuple[Path, Path, list[tuple[str, str]]]:
    """Extract into a fresh folder: (that folder, the dataset root in it, skipped entries)."""
    if extract_dir is not None:
        extract_dir.mkdir(parents=True, exist_ok=True)
    target = Path(tempfile.mkdtemp(prefix="dataset-", dir=extract_dir))
    try:
        skipped = _extract_zip(archive, target, limits)
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise
    root = target
    # Zips made by "compress folder" wrap everything in one folder; a lone class folder does not
    # count, so that a one-class upload is reported as such.
    children = [p for p in root.iterdir() if not _ignored(p.name)]
    if (
        len(children) == 1
        and children[0].is_dir()
        and any(p.is_dir() or p.name == LABELS_CSV for p in children[0].iterdir())
    ):
        root = children[0]
    return target, root, skipped


def _folder_candidates(root: Path) -> tuple[list[str], _Candidates, _Skipped]:
    """Classes from the folder-per-class layout with their files; loose files are skipped."""
    classes: list[str] = []
    candidates: _Candidates = []
    skipped: _Skipped = []
    for child in sorted(root.iterdir()):
        if _ignored(child.name):
            continue
        if child.is_dir():
            classes.append(child.name)
            candidates += [(path, child.name) for path in _walk_files(child)]
        else:
            skipped.append((child, "not inside a class folder"))
    return classes, candidates, skipped


def _pick_column(fieldnames: list[str], wanted: tuple[str, ...], csv_path: Path) -> str:
    """The header name for one of the accepted column names (case and spaces ignored)."""
    by_key = {name.strip().lower(): name for name in fieldnames}
    for key in wanted:
        if key in by_key:
            return by_key[key]
    raise DatasetError(
        "csv_column",
        csv=csv_path.name,
        wanted=" / ".join(map(repr, wanted)),
        header=", ".join(map(repr, fieldnames)),
    )


def _csv_candidates(csv_path: Path, image_dir: Path) -> tuple[list[str], _Candidates, _Skipped]:
    """Classes and files listed in a Kaggle-style labels.csv; unlisted and missing files skipped."""
    if not image_dir.is_dir():
        raise DatasetError("csv_no_image_dir", folder=str(image_dir), csv=csv_path.name)
    files = [p for p in _walk_files(image_dir) if p != csv_path]
    by_name: dict[str, list[Path]] = defaultdict(list)
    for path in files:
        by_name[path.name].append(path)
        by_name[path.stem].append(path)
    classes: set[str] = set()
    candidates: _Candidates = []
    skipped: _Skipped = []
    missing: _Skipped = []
    rows = 0
    used: set[Path] = set()
    listed: set[tuple[Path, str]] = set()
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as fp:
            reader = csv.DictReader(fp)
            id_col = _pick_column(reader.fieldnames or [], _ID_COLUMNS, csv_path)
            label_col = _pick_column(reader.fieldnames or [], _LABEL_COLUMNS, csv_path)
            for row in reader:
                rows += 1
                where = f"{csv_path.name} row {reader.line_num}"
                file_id, label = (row[id_col] or "").strip(), (row[label_col] or "").strip()
                matches = by_name.get(file_id, [])
                if not file_id or not label:
                    skipped.append((where, "empty id or label"))
                elif not matches:
                    missing.append((where, f"no image file for id {file_id!r}"))
                elif len(matches) > 1:
                    skipped.append((where, f"{len(matches)} files match id {file_id!r}"))
                elif (matches[0], label) in listed:
                    skipped.append((where, f"id {file_id!r} is listed twice"))
                else:
                    classes.add(label)
                    candidates.append((matches[0], label))
                    used.add(matches[0])
                    listed.add((matches[0], label))
    except UnicodeDecodeError as exc:
        raise DatasetError("csv_not_utf8", csv=csv_path.name, detail=str(exc)) from exc
    if rows and len(missing) == rows:
        raise DatasetError(
            "csv_files_missing",
            rows=rows,
            csv=csv_path.name,
            folder=str(image_dir),
            first=f"{missing[0][0]}, {missing[0][1]}",
        )
    skipped += missing + [(p, f"not listed in {csv_path.name}") for p in files if p not in used]
    return sorted(classes), candidates, skipped


def _check_file(path: Path) -> str | None:
    """None if the header says this is a usable image, else the reason to skip it."""
    try:
        with open(path, "rb") as fp:
            probe_image(fp)
    except ImageError as exc:
        return _SKIP_REASONS.get(exc.code, str(exc))
    except OSError as exc:
        return f"cannot read: {exc.strerror}"
    return None


def _check_name(label: str) -> None:
    """Refuse one class name that cannot name a folder or a file, or that disguises itself."""
    # Control characters and line breaks (not format characters: emoji need the ZWJ).
    if any(unicodedata.category(char) in ("Cc", "Zl", "Zp") for char in label):
        raise DatasetError("class_control_characters", label=label)
    if len(label) > MAX_CLASS_NAME:
        shown = label[:MAX_CLASS_NAME] + "…"
        raise DatasetError(
            "class_name_too_long", label=shown, length=len(label), limit=MAX_CLASS_NAME
        )
    if label.startswith(".") or "/" in label or "\\" in label:
        raise DatasetError("class_name_path", label=label)
    if _BIDI_CONTROLS.intersection(label):
        raise DatasetError("class_name_bidi", label=label)


def _check_classes(classes: list[str]) -> None:
    """Refuse class names that would break labels.txt or that users could not tell apart."""
    seen: dict[str, str] = {}
    for label in classes:
        _check_name(label)
        key = unicodedata.normalize("NFC", display_name(label)).casefold()
        if key in seen:
            raise DatasetError(
                "class_names_clash", first=seen[key], second=label, shown=display_name(label)
            )
        seen[key] = label


def load_dataset(
    source: Path,
    *,
    labels_csv: Path | None = None,
    extract_dir: Path | None = None,
    min_images_per_class: int = 3,
    min_classes: int = 2,
    limits: ZipLimits = ZipLimits(),
) -> Dataset:
    """Load a class-folder tree, a labels.csv layout or a zip of either; raise DatasetError.

    `min_classes=1` accepts photos of one class, to be added to a kept dataset."""
    source = Path(source)
    if not source.exists():
        raise DatasetError("not_found", source=str(source))
    skipped: list[tuple[str, str]] = []
    root, extracted_to = source, None
    if source.is_file():
        if not _is_zip(source):
            raise DatasetError("not_folder_or_zip", name=source.name)
        extracted_to, root, skipped = _unpack(source, extract_dir, limits)

    if labels_csv is None and (root / LABELS_CSV).is_file():
        labels_csv = root / LABELS_CSV
        image_dir = root / "train" if (root / "train").is_dir() else root
    else:
        image_dir = root
    if labels_csv is not None:
        classes, candidates, loose = _csv_candidates(Path(labels_csv), image_dir)
    else:
        classes, candidates, loose = _folder_candidates(root)
    _check_classes(classes)

    def rel(path: Path | str) -> str:
        return path.relative_to(root).as_posix() if isinstance(path, Path) else path

    skipped += [(rel(path), reason) for path, reason in loose]
    by_hash: dict[str, list[tuple[Path, str]]] = defaultdict(list)
    for path, label in candidates:
        reason = _check_file(path)
        if reason:
            skipped.append((rel(path), reason))
        else:
            by_hash[sha256_file(path)].append((path, label))

    images = []
    for digest, copies in by_hash.items():
        labels = sorted({label for _, label in copies})
        if len(labels) > 1:
            reason = f"identical image labelled {', '.join(map(repr, labels))} (conflicting labels)"
            skipped += [(rel(path), reason) for path, _ in copies]
            continue
        first, *dupes = sorted(path for path, _ in copies)
        images.append(LabeledImage(first, labels[0], digest))
        skipped += [(rel(path), f"duplicate of {rel(first)}") for path in dupes]
    images.sort(key=lambda image: (image.label, str(image.path)))
    _check_counts(root, classes, images, skipped, min_images_per_class, min_classes)
    return Dataset(root, classes, images, sorted(skipped), extracted_to)


def _check_counts(
    root: Path,
    classes: list[str],
    images: list[LabeledImage],
    skipped: list[tuple[str, str]],
    min_images: int,
    min_classes: int = 2,
) -> None:
    """Refuse datasets that cannot train a classifier, naming what is missing."""
    if not images and not skipped:
        raise DatasetError("no_images", folder=str(root))
    if not images:
        example, reason = skipped[0]
        raise DatasetError(
            "no_usable_images",
            folder=str(root),
            skipped=len(skipped),
            example=example,
            reason=reason,
        )
    if len(classes) < min_classes:
        raise DatasetError("one_class", found=len(classes), classes=shown_names(classes))
    counts = {label: 0 for label in classes}
    for image in images:
        counts[image.label] += 1
    # By the names the chat shows, with each count: "Siamese cat (1)".
    short = [f"{display_name(label)} ({n})" for label, n in counts.items() if n < min_images]
    if short:
        raise DatasetError("too_few_images", min=min_images, short=", ".join(short))


def _bucket(sha256: str) -> float:
    """A stable percentage in [0, 100) derived from an image's content hash."""
    return int(sha256[:16], 16) % 10_000 / 100


def split_dataset(
    dataset: Dataset, testing_percentage: float = 10, validation_percentage: float = 10
) -> dict[str, list[LabeledImage]]:
    """Split by content hash into train/validation/test; classes of 3+ get one of each."""
    if min(testing_percentage, validation_percentage) < 0 or (
        testing_percentage + validation_percentage >= 100
    ):
        raise ValueError("percentages must be >= 0 and leave room for training")
    by_class: dict[str, dict[str, list[LabeledImage]]] = defaultdict(
        lambda: {"train": [], "validation": [], "test": []}
    )
    for image in dataset.images:
        bucket = _bucket(image.sha256)
        if bucket < validation_percentage:
            name = "validation"
        elif bucket < validation_percentage + testing_percentage:
            name = "test"
        else:
            name = "train"
        by_class[image.label][name].append(image)
    for splits in by_class.values():
        if sum(map(len, splits.values())) < 3:
            continue
        for name in ("validation", "test", "train"):
            if not splits[name]:
                # Another split holds >= 2 of the >= 3 images; its lowest hash moves over.
                donor = max(splits, key=lambda s: len(splits[s]))
                moved = min(splits[donor], key=lambda image: image.sha256)
                splits[donor].remove(moved)
                splits[name].append(moved)
    split_of = {
        image: name for splits in by_class.values() for name in splits for image in splits[name]
    }
    result: dict[str, list[LabeledImage]] = {"train": [], "validation": [], "test": []}
    for image in dataset.images:
        result[split_of[image]].append(image)
    return result
