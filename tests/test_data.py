"""Dataset loading (folders, labels.csv, zips), hostile archives, and the content-based split."""

from __future__ import annotations

import csv
import hashlib
import io
import shutil
import stat
import zipfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from model.data import (
    Dataset,
    DatasetError,
    ZipLimits,
    display_name,
    load_dataset,
    sha256_file,
    split_dataset,
)


@pytest.fixture(scope="module")
def pets(datasets: Path) -> Path:
    """The Oxford pets subset in the folder-per-class layout."""
    return datasets / "pets-dev"


@pytest.fixture(scope="module")
def pool(pets: Path) -> list[Path]:
    """Distinct real photos to build small datasets from."""
    return sorted(pets.rglob("*.jpg"))


@pytest.fixture(scope="module")
def pets_dataset(pets: Path) -> Dataset:
    """pets-dev loaded once."""
    return load_dataset(pets)


def build(root: Path, pool: list[Path], counts: dict[str, int]) -> Path:
    """Write a folder-per-class dataset of distinct real photos: {class: number of images}."""
    photos = iter(pool)
    for label, count in counts.items():
        (root / label).mkdir(parents=True)
        for i in range(count):
            shutil.copy(next(photos), root / label / f"img_{i}.jpg")
    return root


def zip_folder(folder: Path, archive: Path, prefix: str = "") -> Path:
    """Zip a folder tree (stored, for speed) with every entry under `prefix`."""
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
        for path in sorted(folder.rglob("*")):
            zf.write(path, prefix + path.relative_to(folder).as_posix())
    return archive


def reasons(dataset: Dataset) -> dict[str, str]:
    """Skipped files by relative path."""
    return dict(dataset.skipped)


# Folder layout -----------------------------------------------------------------------------


def test_pets_dev_folder_layout(pets: Path, pets_dataset: Dataset) -> None:
    folders = sorted(p.name for p in pets.iterdir() if p.is_dir())
    assert pets_dataset.classes == folders
    assert len(pets_dataset.classes) == 37
    assert len(pets_dataset.images) == 599
    assert pets_dataset.skipped == []
    assert pets_dataset.root == pets
    assert pets_dataset.extracted_to is None
    for image in pets_dataset.images:
        assert image.path.parent.name == image.label
        assert image.sha256 == hashlib.sha256(image.path.read_bytes()).hexdigest()
    assert Counter(i.label for i in pets_dataset.images)["Abyssinian"] == len(
        list((pets / "Abyssinian").iterdir())
    )


def test_sha256_file_matches_hashlib(pool: list[Path]) -> None:
    assert sha256_file(pool[0]) == hashlib.sha256(pool[0].read_bytes()).hexdigest()


def test_fingerprint_depends_on_content_not_paths(
    tmp_path: Path, pool: list[Path], pets_dataset: Dataset
) -> None:
    first = load_dataset(build(tmp_path / "a", pool, {"cats": 3, "dogs": 4}))
    second = build(tmp_path / "b", pool, {"cats": 3, "dogs": 4})
    (second / "cats" / "img_0.jpg").rename(second / "cats" / "renamed.jpg")
    (second / "dogs" / "deeper").mkdir()
    (second / "dogs" / "img_1.jpg").rename(second / "dogs" / "deeper" / "moved.jpg")
    assert load_dataset(second).fingerprint == first.fingerprint
    (second / "dogs" / "img_2.jpg").unlink()
    shutil.copy(pool[20], second / "dogs" / "img_2.jpg")
    assert load_dataset(second).fingerprint != first.fingerprint
    assert pets_dataset.fingerprint == load_dataset(pets_dataset.root).fingerprint


def test_bad_files_are_skipped_with_reasons(tmp_path: Path, pool: list[Path]) -> None:
    root = build(tmp_path / "set", pool, {"cats": 3, "dogs": 3})
    photo = Image.open(pool[10]).convert("RGB")
    jpeg = (pool[11]).read_bytes()
    (root / "cats" / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    photo.save(root / "cats" / "really_gif.jpg", "GIF")
    photo.save(root / "cats" / "really_png.jpg", "PNG")
    shutil.copy(pool[12], root / "cats" / "jpeg_named.txt")
    (root / "dogs" / "empty.jpg").write_bytes(b"")
    (root / "dogs" / "notes.jpg").write_text("not a photo")
    Image.new("1", (14_000, 13_000)).save(root / "dogs" / "bomb.png")
    Image.new("RGB", (1, 1)).save(root / "dogs" / "dot.png")
    photo.save(root / "dogs" / "scan.tiff", "TIFF")
    (root / "dogs" / "nested" / "deeper").mkdir(parents=True)
    shutil.copy(pool[13], root / "dogs" / "nested" / "deeper" / "puppy.jpeg")
    # OS litter and hidden files are ignored without a report.
    (root / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (root / "dogs" / "Thumbs.db").write_bytes(b"junk")
    (root / "dogs" / ".hidden.jpg").write_bytes(jpeg)
    (root / "__MACOSX" / "dogs").mkdir(parents=True)
    (root / "__MACOSX" / "dogs" / "._img_0.jpg").write_bytes(b"\0\5\26\7")
    (root / "README.txt").write_text("my pets")

    dataset = load_dataset(root)
    assert dataset.classes == ["cats", "dogs"]
    kept = {image.path.relative_to(root).as_posix() for image in dataset.images}
    # Content decides, not the name; truncation is found by the full decode later.
    assert {
        "cats/truncated.jpg",
        "cats/really_gif.jpg",
        "cats/really_png.jpg",
        "cats/jpeg_named.txt",
        "dogs/nested/deeper/puppy.jpeg",
    } <= kept
    skipped = reasons(dataset)
    assert skipped["dogs/empty.jpg"] == "empty file"
    assert skipped["dogs/notes.jpg"] == "not an image"
    assert "pixels" in skipped["dogs/bomb.png"]
    assert "1x1" in skipped["dogs/dot.png"]
    assert "TIFF" in skipped["dogs/scan.tiff"]
    assert skipped["README.txt"] == "not inside a class folder"
    assert len(skipped) == 6
    assert len(kept) == 11


def test_duplicates_and_conflicting_labels(tmp_path: Path, pool: list[Path]) -> None:
    root = build(tmp_path / "set", pool, {"cats": 3, "dogs": 3})
    shutil.copy(root / "cats" / "img_0.jpg", root / "cats" / "copy.jpg")
    shutil.copy(pool[30], root / "cats" / "both.jpg")
    shutil.copy(pool[30], root / "dogs" / "both.jpg")
    dataset = load_dataset(root)
    skipped = reasons(dataset)
    assert skipped["cats/img_0.jpg"] == "duplicate of cats/copy.jpg"
    assert "conflicting labels" in skipped["cats/both.jpg"]
    assert "conflicting labels" in skipped["dogs/both.jpg"]
    assert Counter(image.label for image in dataset.images) == {"cats": 3, "dogs": 3}
    assert len({image.sha256 for image in dataset.images}) == 6


def test_unicode_and_emoji_class_names_are_kept(tmp_path: Path, pool: list[Path]) -> None:
    names = {"Chat_siamois_é": 3, "犬": 3, "🐱_cat": 3, "🐈\u200d⬛": 3}
    dataset = load_dataset(build(tmp_path / "set", pool, names))
    assert dataset.classes == sorted(names)
    assert {image.label for image in dataset.images} == set(names)
    assert [display_name(c) for c in dataset.classes] == [
        "Chat siamois é",
        "犬",
        "🐈\u200d⬛",
        "🐱 cat",
    ]


@pytest.mark.parametrize(
    ("label", "shown"),
    [
        ("german_shorthaired", "German shorthaired"),
        ("Maine_Coon", "Maine Coon"),
        ("great-pyrenees", "Great pyrenees"),
        ("  spaced__out  ", "Spaced out"),
        ("éclair", "Éclair"),
        ("🐶", "🐶"),
        ("___", "___"),
    ],
)
def test_display_name(label: str, shown: str) -> None:
    assert display_name(label) == shown


@pytest.mark.parametrize(
    ("counts", "message"),
    [
        ({"cats": 5}, "need at least 2 classes, found 1: Cats."),
        ({"siamese_cat": 3, "dogs": 1}, "images: Dogs (1)."),  # the names the chat shows
        ({"cats": 3, "siamese_cat": 0}, "images: Siamese cat (0)."),
        ({"Cat": 3, "cat": 3}, "'Cat' and 'cat'"),
        ({"great_pyrenees": 3, "great-pyrenees": 3}, "both be shown as 'Great pyrenees'"),
    ],
)
def test_unusable_datasets_are_refused(
    tmp_path: Path, pool: list[Path], counts: dict[str, int], message: str
) -> None:
    with pytest.raises(DatasetError) as info:
        load_dataset(build(tmp_path / "set", pool, counts))
    assert message.lower() in str(info.value).lower()


def test_min_images_per_class_is_configurable(tmp_path: Path, pool: list[Path]) -> None:
    root = build(tmp_path / "set", pool, {"cats": 2, "dogs": 2})
    assert len(load_dataset(root, min_images_per_class=2).images) == 4
    with pytest.raises(DatasetError, match="at least 3"):
        load_dataset(root)


def test_control_characters_in_class_names_are_refused(tmp_path: Path, pool: list[Path]) -> None:
    with pytest.raises(DatasetError, match="control characters"):
        load_dataset(build(tmp_path / "set", pool, {"cats": 3, "dogs\nand wolves": 3}))


def test_no_images_at_all(tmp_path: Path) -> None:
    for label in ("cats", "dogs"):
        (tmp_path / label).mkdir()
        (tmp_path / label / "a.jpg").write_text("text")
    with pytest.raises(DatasetError, match="No usable images"):
        load_dataset(tmp_path)


def test_missing_source_and_plain_file(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset(tmp_path / "nope")
    (tmp_path / "photos.zip").write_text("not a zip at all")
    with pytest.raises(DatasetError, match="neither a folder nor a zip"):
        load_dataset(tmp_path / "photos.zip")


# labels.csv layout -------------------------------------------------------------------------


def test_csv_sample_layout(datasets: Path) -> None:
    source = datasets / "csv-sample"
    dataset = load_dataset(source)
    with open(source / "labels.csv", newline="") as fp:
        expected = {row["id"]: row["breed"] for row in csv.DictReader(fp)}
    assert len(dataset.classes) == 3
    assert dataset.classes == sorted(set(expected.values()))
    assert len(dataset.images) == 60
    assert dataset.skipped == []
    assert {image.path.stem: image.label for image in dataset.images} == expected


def write_kaggle(root: Path, pool: list[Path], rows: list[str], files: int = 6) -> Path:
    """A labels.csv with the given text lines plus images p0..p{files-1}.jpg in root/train."""
    (root / "train").mkdir(parents=True)
    for i in range(files):
        shutil.copy(pool[i], root / "train" / f"p{i}.jpg")
    (root / "labels.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return root


def test_csv_with_bom_extra_columns_blank_lines_and_missing_files(
    tmp_path: Path, pool: list[Path]
) -> None:
    rows = ["\ufeffscore,ID,Label ,source"]
    rows += [f"0.5,p{i},{'dog' if i % 2 else 'cat'},web" for i in range(6)]
    rows[3:3] = ["", "1,ghost,cat,web", "1,p9.jpg,dog,web"]
    rows += ["1,p2.jpg,cat,web", "1,,cat,web"]
    root = write_kaggle(tmp_path, pool, rows, files=7)
    dataset = load_dataset(root)
    assert dataset.classes == ["cat", "dog"]
    assert Counter(i.label for i in dataset.images) == {"cat": 3, "dog": 3}
    skipped = reasons(dataset)
    assert skipped["labels.csv row 5"] == "no image file for id 'ghost'"
    assert skipped["labels.csv row 6"] == "no image file for id 'p9.jpg'"
    assert skipped["labels.csv row 11"] == "id 'p2.jpg' is listed twice"
    assert skipped["labels.csv row 12"] == "empty id or label"
    assert skipped["train/p6.jpg"] == "not listed in labels.csv"


def test_csv_given_explicitly_with_images_beside_it(tmp_path: Path, pool: list[Path]) -> None:
    images = tmp_path / "photos"
    images.mkdir()
    lines = ["file,class"]
    for i in range(6):
        shutil.copy(pool[i], images / f"{i:03d}.jpeg")
        lines.append(f"{i:03d}.jpeg,{'tabby' if i < 3 else 'husky'}")
    labels = tmp_path / "elsewhere.csv"
    labels.write_text("\n".join(lines))
    dataset = load_dataset(images, labels_csv=labels)
    assert dataset.classes == ["husky", "tabby"]
    assert len(dataset.images) == 6

    # Auto-detected with the images in the same folder as labels.csv, not in train/.
    shutil.copy(labels, images / "labels.csv")
    assert load_dataset(images).fingerprint == dataset.fingerprint


def test_csv_where_no_file_exists_or_columns_are_missing(tmp_path: Path, pool: list[Path]) -> None:
    root = write_kaggle(tmp_path / "a", pool, ["id,breed", "x1,cat", "x2,dog"])
    with pytest.raises(DatasetError, match=r"None of the 2 files.*row 2.*'x1'"):
        load_dataset(root)
    root = write_kaggle(tmp_path / "b", pool, ["name,breed", "p0,cat"])
    with pytest.raises(DatasetError, match="'id'"):
        load_dataset(root)


# Zips --------------------------------------------------------------------------------------


def test_zip_of_pets_dev_with_a_wrapping_folder(
    tmp_path: Path, pets: Path, pets_dataset: Dataset
) -> None:
    archive = zip_folder(pets, tmp_path / "upload.bin", prefix="pets-dev/")
    dataset = load_dataset(archive, extract_dir=tmp_path / "work")
    assert dataset.classes == pets_dataset.classes
    assert len(dataset.images) == 599
    assert dataset.fingerprint == pets_dataset.fingerprint
    assert dataset.extracted_to is not None
    assert dataset.extracted_to.parent == tmp_path / "work"
    assert dataset.root == dataset.extracted_to / "pets-dev"


def test_zip_of_csv_sample(tmp_path: Path, datasets: Path) -> None:
    archive = zip_folder(datasets / "csv-sample", tmp_path / "kaggle.zip")
    dataset = load_dataset(archive, extract_dir=tmp_path / "work")
    assert dataset.fingerprint == load_dataset(datasets / "csv-sample").fingerprint
    assert len(dataset.classes) == 3
    assert len(dataset.images) == 60
    shutil.rmtree(dataset.extracted_to)


def test_zip_of_a_single_class_folder_is_reported_as_one_class(
    tmp_path: Path, pool: list[Path]
) -> None:
    folder = build(tmp_path / "set", pool, {"cats": 4})
    with pytest.raises(DatasetError, match="found 1: Cats"):
        load_dataset(zip_folder(folder, tmp_path / "cats.zip"), extract_dir=tmp_path / "x")


def hostile_zip(path: Path, pool: list[Path]) -> Path:
    """Two good classes plus entries that must never be written where they point."""
    with zipfile.ZipFile(path, "w") as zf:
        for i in range(6):
            zf.write(pool[i], f"{'cats' if i < 3 else 'dogs'}/{i}.jpg")
        zf.writestr("../evil.jpg", pool[7].read_bytes())
        zf.writestr("cats/../../evil2.jpg", pool[7].read_bytes())
        zf.writestr("/tmp/absolute_evil.jpg", pool[7].read_bytes())
        zf.writestr("C:\\windows\\evil.jpg", pool[7].read_bytes())
        zf.writestr(zipfile.ZipInfo(""), pool[7].read_bytes())  # no name (is_dir() raises on it)
        link = zipfile.ZipInfo("dogs/link.jpg")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, "/etc/passwd")
        inner = io.BytesIO()
        with zipfile.ZipFile(inner, "w") as nested:
            nested.write(pool[8], "cats/inner.jpg")
        zf.writestr("cats/more.zip", inner.getvalue())
        zf.writestr("cats/sneaky.jpg", inner.getvalue())
        zf.writestr("__MACOSX/cats/._0.jpg", b"\0\5\26\7")
        zf.writestr("dogs/.DS_Store", b"\0\0\0\1Bud1")
    return path


def test_hostile_entries_are_skipped_and_nothing_escapes(tmp_path: Path, pool: list[Path]) -> None:
    work = tmp_path / "deep" / "work"
    dataset = load_dataset(hostile_zip(tmp_path / "up.zip", pool), extract_dir=work)
    assert Counter(i.label for i in dataset.images) == {"cats": 3, "dogs": 3}
    skipped = reasons(dataset)
    for name in ("../evil.jpg", "cats/../../evil2.jpg", "/tmp/absolute_evil.jpg"):
        assert skipped[name] == "unsafe path in archive (not extracted)"
    assert skipped["C:\\windows\\evil.jpg"] == "unsafe path in archive (not extracted)"
    assert skipped[""] == "unsafe path in archive (not extracted)"
    assert skipped["dogs/link.jpg"] == "symbolic link in archive (not extracted)"
    assert skipped["cats/more.zip"] == "nested archive (not extracted)"
    assert skipped["cats/sneaky.jpg"] == "nested archive (not extracted)"
    assert len(skipped) == 8
    written = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert [p for p in written if "evil" in p or "inner" in p or "link" in p] == []
    assert not Path("/tmp/absolute_evil.jpg").exists()
    assert all(not p.is_symlink() for p in work.rglob("*"))


def encrypted_zip(path: Path, pool: list[Path]) -> Path:
    """A zip entry flagged as encrypted (stdlib cannot encrypt, so the flag bit is set by hand)."""
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("cats/secret.jpg", b"ciphertext")
    with zipfile.ZipFile(path) as zf:
        local, central = zf.infolist()[0].header_offset, zf.start_dir
    data = bytearray(path.read_bytes())
    data[local + 6] |= 0x1  # general purpose flags of the local header
    data[central + 8] |= 0x1  # and of the central directory record
    path.write_bytes(bytes(data))
    return path


def bomb_zip(path: Path, pool: list[Path]) -> Path:
    """One 8 MiB entry of zeros: deflates about 1000 to 1."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("cats/huge.jpg", bytes(8 << 20))
    return path


def many_files_zip(path: Path, pool: list[Path]) -> Path:
    """Thirty small entries."""
    with zipfile.ZipFile(path, "w") as zf:
        for i in range(30):
            zf.writestr(f"{'cats' if i % 2 else 'dogs'}/{i}.jpg", pool[0].read_bytes())
    return path


def lying_zip(path: Path, pool: list[Path]) -> Path:
    """A 16 MiB entry whose headers claim 1000 bytes, so the declared sizes pass every cap."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("cats/a.jpg", bytes(16 << 20))
    data = bytearray(buf.getvalue())
    local, central = data.find(b"PK\x03\x04"), data.find(b"PK\x01\x02")
    data[local + 22 : local + 26] = (1000).to_bytes(4, "little")
    data[central + 24 : central + 28] = (1000).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    return path


def empty_zip(path: Path, pool: list[Path]) -> Path:
    """A valid zip with no entries (just the end-of-central-directory record)."""
    zipfile.ZipFile(path, "w").close()
    return path


def corrupt_zip(path: Path, pool: list[Path]) -> Path:
    """Zip magic followed by garbage."""
    path.write_bytes(b"PK\x03\x04" + bytes(range(256)))
    return path


@pytest.mark.parametrize(
    ("make", "limits", "message"),
    [
        (encrypted_zip, ZipLimits(), "password-protected"),
        (bomb_zip, ZipLimits(), "refused: 'cats/huge.jpg' expands"),
        (bomb_zip, ZipLimits(max_ratio=10_000, max_total_bytes=4 << 20), "refused: it unpacks"),
        (many_files_zip, ZipLimits(max_files=20), "refused: 30 files"),
        (lying_zip, ZipLimits(max_total_bytes=1 << 20), "cannot be read"),
        (empty_zip, ZipLimits(), "empty"),
        (corrupt_zip, ZipLimits(), "cannot be read"),
    ],
    ids=["encrypted", "ratio", "total-size", "file-count", "lying-header", "empty", "corrupt"],
)
def test_dangerous_or_broken_zips_are_refused(
    tmp_path: Path,
    pool: list[Path],
    make: Callable[[Path, list[Path]], Path],
    limits: ZipLimits,
    message: str,
) -> None:
    archive = make(tmp_path / "upload.zip", pool)
    work = tmp_path / "work"
    with pytest.raises(DatasetError, match=message):
        load_dataset(archive, extract_dir=work, limits=limits)
    # Nothing half-extracted is left behind, and nothing big was ever written.
    assert not work.exists() or list(work.iterdir()) == []


# Split -------------------------------------------------------------------------------------


def test_split_of_pets_dev(pets_dataset: Dataset) -> None:
    split = split_dataset(pets_dataset)
    assert set(split) == {"train", "validation", "test"}
    everything = [image for images in split.values() for image in images]
    assert sorted(everything, key=lambda i: i.path) == sorted(
        pets_dataset.images, key=lambda i: i.path
    )
    assert len(set(everything)) == 599
    total = len(pets_dataset.images)
    assert 0.05 < len(split["validation"]) / total < 0.15
    assert 0.05 < len(split["test"]) / total < 0.15
    for label in pets_dataset.classes:
        for name, images in split.items():
            assert any(image.label == label for image in images), (label, name)
    assert split_dataset(pets_dataset) == split


def test_split_follows_content_not_path(tmp_path: Path, pets: Path, pets_dataset: Dataset) -> None:
    moved = tmp_path / "moved"
    for image in pets_dataset.images:
        # New names and an extra folder level: only the bytes stay the same.
        target = moved / image.label / "sub" / f"{image.sha256[:12]}.jpeg"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(image.path, target)
    before = {n: {i.sha256 for i in images} for n, images in split_dataset(pets_dataset).items()}
    after = {n: {i.sha256 for i in imgs} for n, imgs in split_dataset(load_dataset(moved)).items()}
    assert before == after


def test_small_classes_get_one_image_in_each_split(tmp_path: Path, pool: list[Path]) -> None:
    dataset = load_dataset(build(tmp_path / "set", pool, {"a": 3, "b": 3, "c": 4, "d": 5}))
    split = split_dataset(dataset)
    for label in dataset.classes:
        sizes = [sum(i.label == label for i in split[name]) for name in split]
        assert min(sizes) >= 1, (label, sizes)
    assert split_dataset(dataset) == split


def test_split_percentages_are_checked(pets_dataset: Dataset) -> None:
    with pytest.raises(ValueError, match="percentages"):
        split_dataset(pets_dataset, testing_percentage=50, validation_percentage=50)
    with pytest.raises(ValueError, match="percentages"):
        split_dataset(pets_dataset, testing_percentage=-1)
    wide = split_dataset(pets_dataset, testing_percentage=30, validation_percentage=20)
    assert 0.4 < len(wide["train"]) / len(pets_dataset.images) < 0.6
