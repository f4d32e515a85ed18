"""Checked safetensors reads shared by the weight formats."""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from safetensors import SafetensorError, safe_open

from shared.errors import GPT2Error

ALIGNMENT = 64
"""Bytes: JAX on CPU adopts a host array aligned like this without copying it."""

_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": "bfloat16",
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8,
    "BOOL": np.bool_,
}  # fmt: skip


def read_safetensors(path: str | os.PathLike[str]) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """All tensors of a safetensors file as numpy arrays, plus its string metadata.

    The file is read once into one `ALIGNMENT`-aligned buffer and the tensors are views of it, so
    placing them on the CPU device copies nothing (a 124M checkpoint is 500 MB). safetensors itself
    checks the header, the offsets and the file size first. A missing, foreign or truncated file,
    or one holding NaN or Inf, raises one `GPT2Error` naming it.
    """
    try:
        with safe_open(str(path), framework="np") as f:
            metadata = f.metadata() or {}
        tensors = _aligned_tensors(Path(path))
    except FileNotFoundError:
        raise GPT2Error(f"{path} does not exist.") from None
    except (SafetensorError, OSError, TypeError, ValueError) as err:
        raise GPT2Error(
            f"{path} is not a readable safetensors file ({err}); it may be truncated, so write "
            "or download it again."
        ) from None
    check_finite(tensors, path)
    return tensors, metadata


def check_finite(tensors: Mapping[str, np.ndarray], source: object) -> None:
    """Refuse weights holding NaN or Inf, naming the first such tensor: they would load and then
    generate garbage without a word. Read in blocks, so no temporary is the size of a tensor."""
    for name, array in tensors.items():
        if array.dtype.kind in "biu":
            continue
        flat = array.reshape(-1)
        if not all(np.isfinite(flat[i : i + _BLOCK]).all() for i in range(0, flat.size, _BLOCK)):
            raise GPT2Error(
                f"Tensor {name!r} in {source} holds NaN or Inf values, so the weights are "
                "damaged; use an earlier checkpoint, or convert or download them again."
            )


_BLOCK = 1 << 22
"""Elements checked at a time by `check_finite`."""


def _aligned_tensors(path: Path) -> dict[str, np.ndarray]:
    """The tensors of a safetensors file whose header safetensors has already checked."""
    with open(path, "rb") as file:
        (header_size,) = struct.unpack("<Q", file.read(8))
        header = json.loads(file.read(header_size))
        size = os.fstat(file.fileno()).st_size - 8 - header_size
        buffer = np.empty(size + ALIGNMENT, np.uint8)
        start = -buffer.ctypes.data % ALIGNMENT
        data = buffer[start : start + size]
        if file.readinto(data.data) != size:  # data.data: a memoryview of the array
            raise ValueError("the file ended early")
    header.pop("__metadata__", None)
    return {
        name: data[begin:end].view(_dtype(path, name, entry["dtype"])).reshape(entry["shape"])
        for name, entry in header.items()
        for begin, end in [entry["data_offsets"]]
    }


def _dtype(path: Path, name: str, dtype: str) -> np.dtype:
    """The numpy dtype of safetensors' `dtype` code, else a `GPT2Error` naming the tensor."""
    if dtype not in _DTYPES:
        raise GPT2Error(
            f"Tensor {name!r} in {path} has dtype {dtype}, which gpt2-jax cannot read; supported "
            f"dtypes are {', '.join(_DTYPES)}."
        )
    if dtype == "BF16":  # numpy's bfloat16 comes with ml_dtypes, slow to load for other files
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(_DTYPES[dtype])


def read_metadata(path: str | os.PathLike[str]) -> dict[str, str] | None:
    """The metadata of a safetensors file, or None when `path` is not a readable one."""
    try:
        with safe_open(str(path), framework="np") as f:
            return f.metadata() or {}
    except (SafetensorError, OSError):
        return None
