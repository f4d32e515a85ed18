"""Atomic file writes: a file is either its old self or completely the new one, never partial."""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is synced and renamed onto `path`.

    The temporary file lives in the same folder so `os.replace` is an atomic rename; on failure it
    is removed and `path` is left as it was. The result gets the mode a plain `open` would give
    it (0o666 less the umask), so a shared cache stays readable by the others who share it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp, mode = _create_beside(path)
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _create_beside(path: Path) -> tuple[Path, int]:
    """A new empty file `.<name>.<random>.tmp` beside `path`, and its permission bits.

    `os.open` applies the umask to 0o666 itself, so the mode is read without `os.umask`, whose
    set-and-restore would briefly change the umask of every thread.
    """
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        return tmp, stat.S_IMODE(os.fstat(fd).st_mode)
    finally:
        os.close(fd)
