"""Tokenizers: text <-> token ids, every one behind the `TextTokenizer` protocol.

`Tokenizer` is GPT-2's byte-level BPE through tiktoken, built from a checkpoint's own
`encoder.json` + `vocab.bpe`; `CharTokenizer` is one token per character of a training corpus'
alphabet (`gpt2 prepare --tokenizer char`).
"""

from __future__ import annotations

import base64
import codecs
import contextlib
import hashlib
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import tiktoken
from tiktoken.load import data_gym_to_mergeable_bpe_ranks

from shared.atomic import atomic_path
from shared.digests import ENCODER_JSON_SHA256, VOCAB_BPE_SHA256, file_sha256
from shared.errors import GPT2Error

ENDOFTEXT = "<|endoftext|>"
EOT_ID = 50256
# The merge ranks derived from those two files, in tiktoken's format: byte for byte OpenAI's
# `r50k_base.tiktoken`. Kept beside them, so later starts read the ranks instead of deriving them.
RANKS_NAME = "gpt2.tiktoken"
RANKS_SHA256 = "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"
# GPT-2's pre-tokenizer regex in tiktoken's possessive form (same splits as OpenAI's original).
_PAT_STR = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""


@runtime_checkable
class TextTokenizer(Protocol):
    """What generation, scoring and stop strings need of a tokenizer.

    `eot_id` is `<|endoftext|>`'s id, GPT-2's document boundary that starts an unconditional
    sample and the score of a text's first token; None for a tokenizer without one (characters).
    """

    @property  # read-only, so a tokenizer's plain `int` or `None` attribute satisfies it
    def eot_id(self) -> int | None: ...

    @property
    def n_vocab(self) -> int: ...

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Iterable[int]) -> str: ...

    def decode_bytes(self, ids: Iterable[int]) -> bytes: ...

    def vocabulary(self) -> list[bytes]:
        """Every token's bytes, indexed by id."""
        ...

    def stream_decoder(self) -> StreamDecoder: ...


def _derive_ranks(folder: Path, *, managed: bool) -> dict[bytes, int]:
    """Merge ranks from OpenAI's `encoder.json` + `vocab.bpe`, after checking both files (deleted
    when they are damaged and `managed`: the models cache downloads them again)."""
    encoder_json, vocab_bpe = folder / "encoder.json", folder / "vocab.bpe"
    _check_sha256(encoder_json, ENCODER_JSON_SHA256, managed=managed)
    _check_sha256(vocab_bpe, VOCAB_BPE_SHA256, managed=managed)
    return data_gym_to_mergeable_bpe_ranks(
        vocab_bpe_file=str(vocab_bpe),
        encoder_json_file=str(encoder_json),
        vocab_bpe_hash=VOCAB_BPE_SHA256,
        encoder_json_hash=ENCODER_JSON_SHA256,
    )


def _cached_ranks(folder: Path) -> dict[bytes, int]:
    """The ranks from `folder/gpt2.tiktoken`, written there (atomically) on first use.

    A file that is not exactly the expected one (partial, edited) is derived and written again;
    a read-only folder (a shared, pre-filled models cache) is only read. The format (base64 token,
    rank, one per line) is read and written here: tiktoken's `load_tiktoken_bpe` would first copy
    the file into its temporary-folder cache, and `dump_tiktoken_bpe` needs blobfile.
    """
    path = folder / RANKS_NAME
    if path.is_file():
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() == RANKS_SHA256:
            return {
                base64.b64decode(token): int(rank)
                for token, rank in (line.split() for line in data.splitlines())
            }
    ranks = _derive_ranks(folder, managed=True)
    with contextlib.suppress(OSError), atomic_path(path) as tmp:
        tmp.write_bytes(
            b"".join(
                base64.b64encode(token) + b" %d\n" % rank
                for token, rank in sorted(ranks.items(), key=lambda item: item[1])
            )
        )
    return ranks


def _check_sha256(path: Path, expected: str, *, managed: bool) -> None:
    if not path.is_file():
        raise GPT2Error(f"Tokenizer file {path} is missing; download the model again.")
    digest = file_sha256(path)
    if digest == expected:
        return
    advice = "replace it with OpenAI's file"
    if managed:
        try:
            path.unlink()
            advice = "it was deleted, so run again to download it afresh"
        except OSError:  # a read-only cache
            advice = "delete it and run again to download it afresh"
    raise GPT2Error(
        f"Tokenizer file {path} has sha256 {digest}, not {expected} as OpenAI's GPT-2 file "
        f"has; {advice}."
    )


class Tokenizer:
    """GPT-2 BPE: text <-> token ids, exact round trip for any Unicode text."""

    eot_id: int = EOT_ID

    def __init__(self, folder: str | os.PathLike[str], *, cache_ranks: bool = False) -> None:
        """The tokenizer of `folder`'s `encoder.json` + `vocab.bpe`.

        `cache_ranks` keeps the derived ranks in `folder` (`RANKS_NAME`) for a faster next start;
        for the models folder this library manages, not for folders it was only given to read.
        """
        folder = Path(folder)
        ranks = _cached_ranks(folder) if cache_ranks else _derive_ranks(folder, managed=False)
        self._vocabulary = [b""] * (EOT_ID + 1)
        for token, rank in ranks.items():
            self._vocabulary[rank] = token
        self._vocabulary[EOT_ID] = ENDOFTEXT.encode()
        self._encoding = tiktoken.Encoding(
            name="gpt2",
            pat_str=_PAT_STR,
            mergeable_ranks=ranks,
            special_tokens={ENDOFTEXT: EOT_ID},
            explicit_n_vocab=EOT_ID + 1,
        )

    @property
    def n_vocab(self) -> int:
        return self._encoding.n_vocab

    def encode(self, text: str, *, allow_endoftext: bool = False) -> list[int]:
        """Token ids of `text`. `<|endoftext|>` in the text is plain text unless `allow_endoftext`."""
        allowed = {ENDOFTEXT} if allow_endoftext else set()
        return self._encoding.encode(text, allowed_special=allowed, disallowed_special=())

    def decode(self, ids: Iterable[int]) -> str:
        """Text of `ids`; bytes that are not (yet) valid UTF-8 become U+FFFD."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        return self._encoding.decode_bytes([int(i) for i in ids])

    def vocabulary(self) -> list[bytes]:
        """Every token's bytes, indexed by id (from the ranks, not 50k single-token decodes)."""
        return self._vocabulary

    def stream_decoder(self) -> StreamDecoder:
        return StreamDecoder(self)


class CharTokenizer:
    """One token per character of the corpus' alphabet (the classic char-level recipe)."""

    eot_id: None = None

    def __init__(self, alphabet: Sequence[str]) -> None:
        self.alphabet = list(alphabet)
        self._ids = {c: i for i, c in enumerate(self.alphabet)}

    @property
    def n_vocab(self) -> int:
        return len(self.alphabet)

    def encode(self, text: str) -> list[int]:
        try:
            return [self._ids[c] for c in text]
        except KeyError:
            unknown = "".join(sorted(set(text) - set(self._ids)))
            raise ValueError(
                f"The text has characters outside this model's alphabet ({unknown!r}); use only "
                f"the {self.n_vocab} characters it was trained on."
            ) from None

    def decode(self, ids: Iterable[int]) -> str:
        return "".join(self.alphabet[int(i)] for i in ids)

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        return self.decode(ids).encode("utf-8")

    def vocabulary(self) -> list[bytes]:
        """Every token's bytes, indexed by id."""
        return [c.encode("utf-8") for c in self.alphabet]

    def stream_decoder(self) -> StreamDecoder:
        return StreamDecoder(self)


def downloaded_gpt2_tokenizer(
    models_dir: str | os.PathLike[str] | None = None, *, progress: bool = True
) -> Tokenizer:
    """GPT-2's tokenizer from the 124M files in the models folder, downloaded on first use.

    The library owns that folder, so the tokenizer keeps its derived ranks there.
    """
    from shared.weights import openai

    folder = openai.download("124M", models_dir, files=openai.TOKENIZER_FILES, progress=progress)
    return Tokenizer(folder, cache_ranks=True)


class StreamDecoder:
    """Turns token ids into text as they arrive, holding back a multi-byte character split
    across tokens (an emoji is often two or three tokens) until it is complete."""

    def __init__(self, tokenizer: TextTokenizer) -> None:
        self._tokenizer = tokenizer
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, ids: Iterable[int]) -> str:
        return self._utf8.decode(self._tokenizer.decode_bytes(ids))

    def flush(self) -> str:
        return self._utf8.decode(b"", final=True)
