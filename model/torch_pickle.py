"""Read legacy (pre-zip) PyTorch checkpoints into numpy arrays, without torch.

The legacy format is a sequence of pickles: a magic number, the protocol version, a dict of
system info, the main object (whose tensors refer to storages by persistent id), the list of
storage keys in file order, then for each key a little-endian int64 element count and the raw
bytes. Unpickling is restricted to the handful of globals such a state dict needs.
"""

from __future__ import annotations

import collections
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION = 1001

# torch storage class name -> numpy dtype (always stored little-endian by the writers we accept).
_STORAGE_DTYPES = {
    "DoubleStorage": np.float64,
    "FloatStorage": np.float32,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


@dataclass(frozen=True)
class _StorageType:
    dtype: np.dtype


@dataclass(frozen=True)
class _StorageRef:
    key: str
    dtype: np.dtype


@dataclass(frozen=True)
class _PendingTensor:
    """A tensor whose storage bytes come after the main pickle."""

    storage: _StorageRef
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor_v2(
    storage: _StorageRef,
    storage_offset: int,
    size: tuple[int, ...],
    stride: tuple[int, ...],
    requires_grad: bool = False,
    backward_hooks: Any = None,
    metadata: Any = None,
) -> _PendingTensor:
    """Stand-in for torch._utils._rebuild_tensor_v2 (same argument order)."""
    return _PendingTensor(storage, storage_offset, tuple(size), tuple(stride))


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals a plain state dict uses."""

    def __init__(self, file: IO[bytes]) -> None:
        super().__init__(file)
        self.storage_dtypes: dict[str, np.dtype] = {}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(np.dtype(_STORAGE_DTYPES[name]).newbyteorder("<"))
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")

    def persistent_load(self, pid: Any) -> _StorageRef:
        kind, storage_type, key, _location, _numel, view_metadata = pid
        if kind != "storage" or not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}")
        if view_metadata is not None:
            raise pickle.UnpicklingError("storage views (torch < 0.4 checkpoints) are unsupported")
        self.storage_dtypes[key] = storage_type.dtype
        return _StorageRef(key, storage_type.dtype)


def _read_storages(f: IO[bytes], dtypes: dict[str, np.dtype]) -> dict[str, np.ndarray]:
    keys = _RestrictedUnpickler(f).load()
    storages = {}
    for key in keys:
        numel = int(np.frombuffer(f.read(8), dtype="<i8")[0])
        dtype = dtypes[key]
        data = f.read(numel * dtype.itemsize)
        if len(data) != numel * dtype.itemsize:
            raise ValueError(f"truncated checkpoint: storage {key} is short")
        storages[key] = np.frombuffer(data, dtype=dtype)
    return storages


def _materialise(tensor: _PendingTensor, storages: dict[str, np.ndarray]) -> np.ndarray:
    flat = storages[tensor.storage.key][tensor.offset :]
    itemsize = flat.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(
        flat, shape=tensor.shape, strides=[s * itemsize for s in tensor.stride], writeable=False
    )
    return np.array(view, dtype=flat.dtype.newbyteorder("="))


def load_legacy_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """Load a legacy torch.save() state dict as {name: numpy array}, in file order."""
    with open(path, "rb") as f:
        if _RestrictedUnpickler(f).load() != MAGIC_NUMBER:
            raise ValueError(f"{path} is not a legacy PyTorch checkpoint (zip files unsupported)")
        if _RestrictedUnpickler(f).load() != PROTOCOL_VERSION:
            raise ValueError(f"{path}: unsupported torch protocol version")
        if not _RestrictedUnpickler(f).load().get("little_endian", False):
            raise ValueError(f"{path}: big-endian checkpoints are unsupported")
        main = _RestrictedUnpickler(f)
        state = main.load()
        storages = _read_storages(f, main.storage_dtypes)
    return {name: _materialise(t, storages) for name, t in state.items()}
