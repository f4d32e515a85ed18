"""Text users give, from files, stdin or the command line, under one policy for bytes that are
not UTF-8: refuse them, naming the input and the offset of the first bad byte, rather than
replace them and work on text the user never wrote."""

from __future__ import annotations

import codecs
from collections.abc import Iterator
from pathlib import Path

from shared.errors import GPT2Error

CHUNK_BYTES = 1 << 20
"""Bytes read from a file at a time."""


def not_utf8(source: str, error: UnicodeDecodeError, offset: int = 0) -> GPT2Error:
    """The error for `source`, whose bytes from `offset` on failed to decode with `error`."""
    return GPT2Error(
        f"{source} is not UTF-8 text ({error.reason} at byte {offset + error.start:,})."
    )


def decode(data: bytes, source: str, offset: int = 0) -> str:
    """`data` (which starts at byte `offset` of `source`) as text."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise not_utf8(source, error, offset) from None


def argument(text: str, option: str) -> str:
    """A command-line string as typed: Python keeps the bytes of an argument that are not
    UTF-8 as lone surrogates, which are refused here like any other text's."""
    return decode(text.encode("utf-8", "surrogateescape"), option)


def read_chunks(path: Path) -> Iterator[str]:
    """The UTF-8 text of `path` in chunks; invalid bytes are named by their offset in the file."""
    decoder, offset = codecs.getincrementaldecoder("utf-8")(), 0
    with path.open("rb") as handle:
        while True:
            block = handle.read(CHUNK_BYTES)
            pending = len(decoder.getstate()[0])  # bytes of a character the last block cut
            try:
                chunk = decoder.decode(block, final=not block)
            except UnicodeDecodeError as error:
                raise not_utf8(str(path), error, offset - pending) from None
            if chunk:
                yield chunk
            if not block:
                return
            offset += len(block)
