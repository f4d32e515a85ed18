"""Tiny Shakespeare prepared as character tokens, for the tests that train."""

from pathlib import Path

from shared import data
from tests.support.paths import TINY_SHAKESPEARE


def prepared_characters(folder: Path, characters: int | None = None) -> Path:
    """`gpt2 prepare --tokenizer char` of Tiny Shakespeare, or of its first `characters`, into
    `folder / "data"` (returned)."""
    source = TINY_SHAKESPEARE
    if characters is not None:
        source = folder / "text.txt"
        source.write_text(TINY_SHAKESPEARE.read_text()[:characters])
    data.prepare([source], folder / "data", "char")
    return folder / "data"
