"""The one exception type users see: its message is a sentence saying what was wrong and what to do."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

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
