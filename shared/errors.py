"""The one exception type users see: its message is a sentence saying what was wrong and what to do."""

from __future__ import annotations

import contextlib
import errno
import tempfile
from collections.abc import Iterator
from pathlib import Path

FREE_WRITABLE_PATH = "give a path whose folders are writable folders, on a disk with free space"


class GPT2Error(Exception):
    """A user-facing failure (bad input, unreachable download, corrupt file). The CLI prints its
    message alone, without a traceback."""


@contextlib.contextmanager
def writing(target: object, advice: str = FREE_WRITABLE_PATH) -> Iterator[None]:
    """Turn an `OSError` of writing `target` (a file in a folder that is a file, a full disk, no
    permission) into a `GPT2Error` naming it and saying, in `advice`, what to give instead."""
    try:
        yield
    except OSError as error:
        raise GPT2Error(f"Cannot write {target} ({error.strerror or error}); {advice}.") from None


def check_writable(option: str, path: Path, *, folder: bool = False) -> None:
    """Fail now, not after minutes of work, where `option`'s output could not be written.

    `path` (a file, or with `folder` a folder) must not be the other kind, and its nearest
    existing folder must take a new file: one is tried, as root passes `os.access` even on /proc.
    """
    absolute = path.absolute()
    existing = next(p for p in (absolute, *absolute.parents) if p.exists())
    with writing(
        f"{option} {path}", f"give a {'folder' if folder else 'file path'} where you can write"
    ):
        if existing == absolute and existing.is_dir() != folder:
            raise OSError(errno.EEXIST, f"it is a {'file' if folder else 'folder'}")
        if existing != absolute and not existing.is_dir():
            raise OSError(errno.ENOTDIR, f"{existing} is a file")
        tempfile.TemporaryFile(dir=existing if existing.is_dir() else existing.parent).close()
