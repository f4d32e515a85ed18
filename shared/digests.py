"""The sha256 a downloaded file must have: OpenAI's where this project knows it, and a mirror's own
from a `sha256sum` file, so a download is checked before it is kept and a damaged cached file is
told from OpenAI's.

Pinned: OpenAI's `encoder.json` and `vocab.bpe`, the same files under every size. OpenAI publishes
no digests of its checkpoint files, so those are checked only against a table given to
`shared.weights.openai.download` or named by `$GPT2_SHA256SUMS`.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from pathlib import Path

from shared.errors import GPT2Error

ENCODER_JSON_SHA256 = "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"
VOCAB_BPE_SHA256 = "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"
PINNED = {"encoder.json": ENCODER_JSON_SHA256, "vocab.bpe": VOCAB_BPE_SHA256}
"""File name -> OpenAI's sha256, for the files that are the same under every size."""

SUMS_ENV = "GPT2_SHA256SUMS"
"""A `sha256sum` file whose lines name files as `<size>/<file>` (`124M/model.ckpt.index`)."""

_LINE = re.compile(r"([0-9a-fA-F]{64}) [ *](\S+)")


def expected_sha256(size: str, name: str, table: Mapping[str, str] | None = None) -> str | None:
    """The sha256 file `name` of `size` must have, None where none is known. `table` maps
    `<size>/<file>` to a digest and wins over the pinned ones (a mirror may serve its own)."""
    table = sums_from_environment() if table is None else table
    return table.get(f"{size}/{name}", PINNED.get(name))


def sums_from_environment() -> dict[str, str]:
    """The table `$GPT2_SHA256SUMS` names, empty when it is not set."""
    path = os.environ.get(SUMS_ENV)
    return read_sums(Path(path)) if path else {}


def read_sums(path: Path) -> dict[str, str]:
    """`<size>/<file>` -> sha256 from a file in `sha256sum`'s format."""
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise GPT2Error(f"{SUMS_ENV} {path} cannot be read ({error}).") from None
    table = {}
    for number, line in enumerate(lines, start=1):
        match = _LINE.fullmatch(line.strip())
        if line.strip() and match is None:
            raise GPT2Error(
                f"Line {number} of {SUMS_ENV} {path} is {line.strip()[:80]!r}; each line must be "
                "a sha256 and a file as `sha256sum` writes them (`<64 hex digits>  124M/vocab.bpe`)."
            )
        if match:
            table[match.group(2)] = match.group(1).lower()
    return table


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while block := file.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()
