"""Bottleneck extraction with a content-keyed cache.

retrain.py keyed its cache by file name, so a replaced photo kept a stale vector. Here a vector is
stored under the SHA-256 of the image bytes, in a folder named by the backbone identity, the
preprocessing version and the view (original, flipped or one distorted copy). One `.npy` file per
vector, written to a temporary name and renamed, so concurrent writers never leave a torn file.
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from model.runtime import images as imagelib

# (done, total) -> None; the CLI wraps tqdm around it, the worker reports it to the chat.
CountFn = Callable[[int, int], None]


@dataclass(frozen=True)
class Distortions:
    """retrain.py's distortion flags, in percent; all zero means no distorted copies."""

    flip_left_right: bool = False
    random_crop: int = 0
    random_scale: int = 0
    random_brightness: int = 0

    @property
    def active(self) -> bool:
        """True when at least one random distortion (beyond a plain flip) is asked for."""
        return bool(self.random_crop or self.random_scale or self.random_brightness)


@dataclass(frozen=True)
class View:
    """One way of looking at an image before the backbone: the original, its mirror, or a copy."""

    name: str
    distortions: Distortions = Distortions()
    copy: int = 0

    def key(self) -> str:
        """Cache-folder component that changes whenever the pixels fed to the backbone would."""
        d = self.distortions
        if self.name == "distort":
            flip = int(d.flip_left_right)
            params = f"f{flip}c{d.random_crop}s{d.random_scale}b{d.random_brightness}"
            return f"distort-{params}-{self.copy}"
        return self.name

    def apply(self, image: np.ndarray, sha256: str) -> np.ndarray:
        """Transform a decoded uint8 [H,W,3] image; distortions are seeded by the image content."""
        if self.name == "original":
            return image
        if self.name == "flip":
            return image[:, ::-1]
        return _distort(image, self.distortions, _seed(sha256, self.copy))


ORIGINAL = View("original")
FLIP = View("flip")


def training_views(distortions: Distortions, copies: int) -> list[View]:
    """The views extracted for training images: original, mirror, and distorted copies."""
    views = [ORIGINAL]
    if distortions.flip_left_right:
        views.append(FLIP)
    if distortions.active:
        views += [View("distort", distortions, k) for k in range(copies)]
    return views


def _seed(sha256: str, copy: int) -> int:
    return int(hashlib.sha256(f"{sha256}:{copy}".encode()).hexdigest()[:8], 16)


def _distort(image: np.ndarray, d: Distortions, seed: int) -> np.ndarray:
    """retrain.py's crop/scale/brightness/flip on a decoded image, deterministic per seed."""
    rng = np.random.default_rng(seed)
    size = image.shape[0]
    scale = (1.0 + d.random_crop / 100.0) * (1.0 + rng.uniform(0.0, d.random_scale / 100.0))
    if scale > 1.0:
        big = round(size * scale)
        resized = np.asarray(Image.fromarray(image).resize((big, big), Image.BILINEAR))
        top, left = rng.integers(0, big - size + 1, size=2)
        image = resized[top : top + size, left : left + size]
    if d.flip_left_right and rng.random() < 0.5:
        image = image[:, ::-1]
    if d.random_brightness:
        factor = rng.uniform(1.0 - d.random_brightness / 100.0, 1.0 + d.random_brightness / 100.0)
        image = np.clip(image.astype(np.float32) * factor, 0, 255).astype(np.uint8)
    return image


def namespace(backbone_identity: str, view: View, image_size: int) -> str:
    """Folder name for one (backbone, preprocessing and input side, view) combination."""
    raw = f"{backbone_identity}|{imagelib.preprocessing_version(image_size)}|{view.key()}"
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def vector_path(cache_dir: Path, sha256: str) -> Path:
    """Where the vector of one image lives inside a namespace folder."""
    return cache_dir / sha256[:2] / f"{sha256}.npy"


@functools.cache
def _npy_header(dim: int) -> bytes:
    """The .npy header `write_vector` writes before a float32 vector of `dim` values."""
    buf = io.BytesIO()
    np.save(buf, np.zeros(dim, np.float32), allow_pickle=False)
    return buf.getvalue()[: -4 * dim]


def read_vector(path: Path, dim: int) -> np.ndarray | None:
    """A cached vector, or None when it is missing or corrupt (a corrupt file is removed).

    A sound file is exactly what `write_vector` writes: that header, then `dim` finite float32
    values. Checking the bytes is about 5× faster than np.load, which a warm retrain does
    for every image and view.
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError:
        raw = b""
    header = _npy_header(dim)
    if len(raw) == len(header) + 4 * dim and raw.startswith(header):
        vec = np.frombuffer(raw, np.float32, offset=len(header))
        if np.all(np.isfinite(vec)):
            return vec
    path.unlink(missing_ok=True)
    return None


def write_vector(path: Path, vec: np.ndarray) -> None:
    """Write atomically: a reader sees the old file, no file, or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.save(f, np.ascontiguousarray(vec, dtype=np.float32), allow_pickle=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@dataclass
class Extraction:
    """Feature matrices per view, aligned with the input order, plus what happened."""

    vectors: dict[str, np.ndarray]  # view key -> [N, D]; rows of failed images are zero
    ok: np.ndarray  # [N] bool: image decoded (or was cached) for every view
    computed: int = 0
    cached: int = 0
    failures: list[tuple[int, str]] = field(default_factory=list)  # (index, reason)


def _read_all(path: Path) -> bytes:
    return path.read_bytes()


def decode_many(
    sources: Sequence[Path | bytes],
    pool: ThreadPoolExecutor,
    window: int = 64,
    size: int = imagelib.IMAGE_SIZE,
) -> Iterator[np.ndarray | imagelib.ImageError]:
    """Decode images to [size, size, 3] in a thread pool, in order, at most `window` in flight."""

    def one(src: Path | bytes) -> np.ndarray | imagelib.ImageError:
        try:
            data = src if isinstance(src, bytes) else _read_all(src)
            return imagelib.decode_image(data, size)
        except imagelib.ImageError as err:
            return err
        except OSError as err:
            return imagelib.ImageError("unreadable", f"cannot read file: {err}")

    futures = []
    it = iter(sources)
    for src in it:
        futures.append(pool.submit(one, src))
        if len(futures) >= window:
            break
    while futures:
        head = futures.pop(0)
        nxt = next(it, None)
        if nxt is not None:
            futures.append(pool.submit(one, nxt))
        yield head.result()


def decode_all(sources: Sequence[Path | bytes], size: int = imagelib.IMAGE_SIZE) -> np.ndarray:
    """Decoded uint8 photos [N,size,size,3]; the first that fails to decode raises its error."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        decoded = list(decode_many(sources, pool, size=size))
    for photo in decoded:
        if isinstance(photo, imagelib.ImageError):
            raise photo
    return np.stack(decoded) if decoded else np.zeros((0, size, size, 3), np.uint8)


def extract(
    embed: Callable[[np.ndarray], np.ndarray],
    backbone_identity: str,
    dim: int,
    paths: Sequence[Path | bytes],
    sha256s: Sequence[str],
    views: Sequence[Sequence[View]],
    cache_root: Path,
    *,
    image_size: int,
    batch_size: int = 32,
    workers: int = 2,
    progress: CountFn | None = None,
) -> Extraction:
    """Bottlenecks of every (image, view), from the cache where present, else computed in batches.

    `paths` are files or their encoded bytes; `sha256s` are those bytes' hashes.

    Decoding runs in a thread pool while the backbone works on the previous batch. `embed` takes
    float32 [B,S,S,3] in [0,1] (S = `image_size`) and returns [B, dim]. `views[i]` lists the
    views wanted for image i; rows of a view an image does not need stay zero.
    """
    n = len(paths)
    unique = {v.key(): v for vs in views for v in vs}
    dirs = {k: cache_root / namespace(backbone_identity, v, image_size) for k, v in unique.items()}
    out = {k: np.zeros((n, dim), np.float32) for k in unique}
    missing: dict[int, list[View]] = {}
    for i, sha in enumerate(sha256s):
        for v in views[i]:
            vec = read_vector(vector_path(dirs[v.key()], sha), dim)
            if vec is None:
                missing.setdefault(i, []).append(v)
            else:
                out[v.key()][i] = vec
    wanted = sum(map(len, views))
    result = Extraction(out, np.ones(n, bool), cached=wanted - sum(map(len, missing.values())))
    total = sum(map(len, missing.values()))
    if progress:
        progress(0, total)
    todo = sorted(missing)
    batch: list[tuple[int, View, np.ndarray]] = []

    def flush() -> None:
        pixels = imagelib.to_float(np.stack([b[2] for b in batch]))
        vecs = np.asarray(embed(pixels), np.float32)
        for (i, v, _), vec in zip(batch, vecs, strict=True):
            out[v.key()][i] = vec
            write_vector(vector_path(dirs[v.key()], sha256s[i]), vec)
        result.computed += len(batch)
        batch.clear()
        if progress:
            progress(result.computed, total)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        for i, decoded in zip(
            todo, decode_many([paths[i] for i in todo], pool, size=image_size), strict=True
        ):
            if isinstance(decoded, imagelib.ImageError):
                result.ok[i] = False
                result.failures.append((i, str(decoded)))
                continue
            for v in missing[i]:
                batch.append((i, v, np.ascontiguousarray(v.apply(decoded, sha256s[i]))))
                if len(batch) >= batch_size:
                    flush()
        if batch:
            flush()
    return result
