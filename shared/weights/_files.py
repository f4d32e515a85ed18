"""File helpers shared by the weight formats: atomic writes and checked safetensors reads."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from safetensors import SafetensorError, safe_open

from shared.errors import GPT2Error


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is synced and renamed onto `path`.

    The temporary file lives in the same folder so `os.replace` is an atomic rename; on failure it
    is removed and `path` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def read_safetensors(path: str | os.PathLike[str]) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """All tensors of a safetensors file as numpy arrays, plus its string metadata.

    A missing, foreign or truncated file raises one `GPT2Error` naming it.
    """
    try:
        with safe_open(str(path), framework="np") as f:
            metadata = f.metadata() or {}
            names = f.keys()
            tensors = {name: f.get_tensor(name) for name in names}
    except FileNotFoundError:
        raise GPT2Error(f"{path} does not exist.") from None
    except (SafetensorError, OSError, TypeError, ValueError) as err:
        raise GPT2Error(
            f"{path} is not a readable safetensors file ({err}); it may be truncated, so write "
            "or download it again."
        ) from None
    return tensors, metadata


def read_metadata(path: str | os.PathLike[str]) -> dict[str, str] | None:
    """The metadata of a safetensors file, or None when `path` is not a readable one."""
    try:
        with safe_open(str(path), framework="np") as f:
            return f.metadata() or {}
    except (SafetensorError, OSError):
        return None
