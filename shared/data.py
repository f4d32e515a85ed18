"""Token files for training: `gpt2 prepare` writes them, the batch sampler reads them.

Layout (nanoGPT's): `train.bin` and `val.bin` hold uint16 token ids back to back; `meta.json` says
which tokenizer made them, the vocabulary size and the counts (and, for characters, the alphabet).
Text is streamed in chunks, so a corpus larger than memory never loads at once.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from shared.atomic import atomic_path
from shared.errors import GPT2Error, check_writable
from shared.sources import holds_weights
from shared.text_input import read_chunks
from shared.tokenizer import CharTokenizer, Tokenizer, downloaded_gpt2_tokenizer

TOKENIZERS = ("gpt2", "char")
META_NAME = "meta.json"
OUTPUT_NAMES = ("train.bin", "val.bin", META_NAME)
UINT16_LIMIT = 1 << 16
_WHITE_SPACE = "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
_LAST_CUT = re.compile(f"(?s:.*)(?=[{_WHITE_SPACE}][^{_WHITE_SPACE}])")
"""Matches up to the last whitespace character (Unicode White_Space: the pre-tokenizer's `\\s`)
that a non-space follows: the last place a text may be cut (see `_safe_pieces`)."""


def text_files(
    inputs: Sequence[str | os.PathLike[str]], out_dir: str | os.PathLike[str] | None = None
) -> list[Path]:
    """The files to read, in a stable order: given files as given, folders' files sorted.

    A folder's files that `gpt2 prepare` writes into `out_dir` are left out, so preparing again
    into a folder inside (or equal to) an input folder never reads the token files as text.
    """
    files: list[Path] = []
    outputs = set() if out_dir is None else {(Path(out_dir) / n).resolve() for n in OUTPUT_NAMES}
    for entry in map(Path, inputs):
        if entry.is_dir():
            found = sorted(
                p
                for p in entry.rglob("*")
                if p.is_file() and not _hidden(p, entry) and p.resolve() not in outputs
            )
            if not found:
                raise GPT2Error(f"Folder {entry} holds no files to prepare.")
            files.extend(found)
        elif entry.is_file():
            files.append(entry)
        else:
            raise GPT2Error(f"{entry} does not exist; give text files or folders of them.")
    return files


def _hidden(path: Path, folder: Path) -> bool:
    """Whether `path` or a folder between it and `folder` is hidden (`.git/`, `.cache/`)."""
    return any(part.startswith(".") for part in path.relative_to(folder).parts)


def _safe_pieces(chunks: Iterable[str]) -> Iterator[str]:
    r"""Re-cut a stream of text where GPT-2's pre-tokenizer splits anyway, so encoding the pieces
    equals encoding the whole.

    The cut goes before the last character of a whitespace run that a non-space follows
    ("a\r|\nb", "a |b", "a\n\n|\nb"). The pre-tokenizer ends a token there: a run is split
    into all but its last character and that character (with the word after it, for a space),
    and tokens never take whitespace at their end. Only the newly read chunk (and the character
    before it) is searched, so text without a cut point costs no rescans.
    """
    held: list[str] = []
    for chunk in chunks:
        window = (held[-1][-1] if held else "") + chunk
        held.append(chunk)
        last = _LAST_CUT.match(window)
        if last is None:
            continue
        text = "".join(held)
        cut = len(text) - len(window) + last.end()
        if cut:
            yield text[:cut]
        held = [text[cut:]]
    if held:
        yield "".join(held)


@dataclasses.dataclass
class Corpus:
    """What one pass over the inputs learned: documents' sizes in characters and the alphabet."""

    files: list[Path]
    chars_per_file: list[int]
    alphabet: list[str]

    @classmethod
    def scan(cls, files: list[Path]) -> Corpus:
        sizes, alphabet = [], set()
        for path in files:
            size = 0
            for chunk in read_chunks(path):
                size += len(chunk)
                alphabet.update(chunk)
            sizes.append(size)
        if not sum(sizes):
            raise GPT2Error("The input text is empty; give at least one non-empty file.")
        return cls(files, sizes, sorted(alphabet))

    def split(self, val_fraction: float) -> tuple[Iterator[Iterator[str]], Iterator[Iterator[str]]]:
        """(train, val) document streams: the first `1 - val_fraction` of all characters, the rest.

        Each stream yields documents as iterators of chunks; a document cut by the split point
        continues in the other stream.
        """
        total = sum(self.chars_per_file)
        boundary = int(total * (1 - val_fraction))
        if not 0 < boundary < total:
            raise GPT2Error(
                f"val_fraction {val_fraction} leaves the {'train' if boundary == 0 else 'val'} "
                f"split empty ({boundary:,} train and {total - boundary:,} val characters); "
                "choose a fraction that leaves text in both, or give more text."
            )
        return self._documents(0, boundary), self._documents(boundary, None)

    def _documents(self, start: int, stop: int | None) -> Iterator[Iterator[str]]:
        offset = 0
        for path, size in zip(self.files, self.chars_per_file, strict=True):
            lo, hi = max(start - offset, 0), size if stop is None else min(stop - offset, size)
            if lo < hi:
                yield _slice_chunks(read_chunks(path), lo, hi)
            offset += size


def _slice_chunks(chunks: Iterable[str], lo: int, hi: int) -> Iterator[str]:
    position = 0
    for chunk in chunks:
        begin, end = max(lo - position, 0), min(hi - position, len(chunk))
        if begin < end:
            yield chunk[begin:end]
        position += len(chunk)
        if position >= hi:
            return


def _write_tokens(
    path: Path,
    documents: Iterator[Iterator[str]],
    encode: Callable[[str], list[int]],
    separator: list[int],
) -> int:
    """Encode documents into uint16 ids at `path`; returns the token count."""
    count = 0
    with path.open("wb") as out:
        for index, document in enumerate(documents):
            ids = [] if index == 0 else list(separator)
            for piece in _safe_pieces(document):
                ids.extend(encode(piece))
                np.asarray(ids, np.uint16).tofile(out)
                count, ids = count + len(ids), []
            np.asarray(ids, np.uint16).tofile(out)
            count += len(ids)
    return count


def prepare(
    inputs: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    tokenizer: str = "gpt2",
    val_fraction: float = 0.1,
    bpe_dir: str | os.PathLike[str] | None = None,
    alphabet_from: str | os.PathLike[str] | None = None,
) -> dict:
    """Tokenize text files or folders into `out_dir/{train,val}.bin` + `meta.json`; returns meta.

    Documents (files) are joined with `<|endoftext|>` under the GPT-2 tokenizer. `bpe_dir` holds
    `encoder.json` and `vocab.bpe` (default: the downloaded 124M files). The char tokenizer takes
    the text's own characters, or with `alphabet_from` those of another preparation or training
    run (`alphabet_of`), so a character-level model can fine-tune on new text. Both splits are written
    in full before they replace an earlier preparation, and `meta.json` last, so a failed or
    interrupted run leaves the folder as it was, or without a `meta.json` (never with one that
    describes other token files).
    """
    if tokenizer not in TOKENIZERS:
        raise GPT2Error(f"Unknown tokenizer {tokenizer!r}; choose one of {', '.join(TOKENIZERS)}.")
    if not 0 < val_fraction < 1:
        raise GPT2Error(f"val_fraction must be between 0 and 1 (exclusive), got {val_fraction!r}.")
    if alphabet_from is not None and tokenizer != "char":
        raise GPT2Error(
            f"alphabet_from gives the characters of the char tokenizer, not of {tokenizer!r}; "
            "prepare with tokenizer char."
        )
    check_writable("out_dir", Path(out_dir), folder=True)
    corpus = Corpus.scan(text_files(inputs, out_dir))
    train, val = corpus.split(val_fraction)
    meta: dict = {"tokenizer": tokenizer, "sources": [str(p) for p in corpus.files]}
    if tokenizer == "char":
        alphabet = corpus.alphabet if alphabet_from is None else alphabet_of(alphabet_from)
        if unknown := "".join(sorted(set(corpus.alphabet) - set(alphabet))):
            raise GPT2Error(
                f"The text has characters that the alphabet of {alphabet_from} lacks, {unknown!r}; "
                "a character-level model has no ids for them, so remove them from the text."
            )
        encoder = CharTokenizer(alphabet)
        separator: list[int] = []
        meta["alphabet"] = alphabet
    else:
        encoder = _gpt2_tokenizer(bpe_dir)
        separator = [encoder.eot_id]
    if encoder.n_vocab > UINT16_LIMIT:
        raise GPT2Error(
            f"The vocabulary has {encoder.n_vocab:,} tokens, more than the {UINT16_LIMIT:,} that "
            "uint16 token files can hold."
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    meta["vocab_size"] = encoder.n_vocab
    splits = {"train": train, "val": val}
    parts = {name: out / f".{name}.bin.part" for name in splits}
    try:
        for name, documents in splits.items():
            meta[f"{name}_tokens"] = _write_tokens(
                parts[name], documents, encoder.encode, separator
            )
        (out / META_NAME).unlink(missing_ok=True)
        for name, part in parts.items():
            os.replace(part, out / f"{name}.bin")
    finally:
        for part in parts.values():
            part.unlink(missing_ok=True)
    with atomic_path(out / META_NAME) as tmp:
        tmp.write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
    return meta


def alphabet_of(source: str | os.PathLike[str]) -> list[str]:
    """The characters, in id order, of a character-level folder that `gpt2 prepare` wrote, or of
    the data a `gpt2 train` run (its out_dir or `best/`) was trained on."""
    path = Path(source)
    if (path / META_NAME).is_file():
        meta = json.loads((path / META_NAME).read_text())
    elif path.is_dir() and holds_weights(path):
        from shared.weights import runs

        meta = runs.read_meta(*runs.run_folder(path))[1]["data"]
    else:
        raise GPT2Error(
            f"{source} is neither a folder that `gpt2 prepare` wrote nor the out_dir of a "
            "`gpt2 train` run; alphabet_from reads the characters of one of those."
        )
    if "alphabet" not in meta:
        raise GPT2Error(
            f"{source} holds {meta['tokenizer']}-tokenized data, not characters; alphabet_from "
            "needs a character-level preparation or run."
        )
    return meta["alphabet"]


def _gpt2_tokenizer(bpe_dir: str | os.PathLike[str] | None) -> Tokenizer:
    return downloaded_gpt2_tokenizer() if bpe_dir is None else Tokenizer(bpe_dir)


class TokenDataset:
    """A memory-mapped split (`train` or `val`) of prepared token files, sampled by step.

    Batch `step` depends only on (key, step), so a resumed run draws exactly the batches the
    uninterrupted run would have drawn.
    """

    def __init__(self, data_dir: str | os.PathLike[str], split: str, block_size: int) -> None:
        folder = Path(data_dir)
        path = folder / f"{split}.bin"
        if not (folder / META_NAME).is_file() or not path.is_file():
            raise GPT2Error(
                f"{folder} has no prepared {split} data ({path.name} and {META_NAME}); run "
                f"`gpt2 prepare TEXT --out-dir {folder}` first."
            )
        self.meta = json.loads((folder / META_NAME).read_text())
        count = path.stat().st_size // np.dtype(np.uint16).itemsize
        if count != self.meta.get(f"{split}_tokens", count):
            raise GPT2Error(
                f"{path} holds {count:,} tokens but {folder / META_NAME} says "
                f"{self.meta[f'{split}_tokens']:,}: the folder changed after `gpt2 prepare`; run it "
                "again."
            )
        if count <= block_size:  # before the memmap, which cannot map an empty file
            raise GPT2Error(
                f"The {split} split of {folder} has {count:,} tokens, fewer than one "
                f"block of {block_size} + 1; use more text or a smaller block_size."
            )
        self.tokens = np.memmap(path, dtype=np.uint16, mode="r")
        self.block_size = block_size

    def batch(
        self, key: jax.Array, step: int, batch_size: int, rows: slice = slice(None)
    ) -> np.ndarray:
        """[batch_size, block_size + 1] int32 windows (inputs are [:, :-1], targets [:, 1:]).

        `rows` reads only those rows of the batch (a process' own slice in a multi-host run).
        """
        offsets = self.starts(key, step, batch_size)[rows, None] + np.arange(self.block_size + 1)
        return self.tokens[offsets].astype(np.int32)

    def starts(self, key: jax.Array, step: int, batch_size: int) -> np.ndarray:
        """[batch_size] int64 window starts of batch `step`, uniform in [0, tokens - block_size).

        JAX draws int32 (without x64), so a split of 2**31 tokens or more draws 64 random bits
        per start and takes them modulo the range (a bias below 2**-31); smaller splits draw as
        they always have, so their batches stay the same.
        """
        key, high = jax.random.fold_in(key, step), len(self.tokens) - self.block_size
        if high <= np.iinfo(np.int32).max:
            return np.asarray(jax.random.randint(key, (batch_size,), 0, high), np.int64)
        words = np.asarray(jax.random.bits(key, (batch_size, 2), jnp.uint32), np.uint64)
        return ((words[:, 0] << np.uint64(32) | words[:, 1]) % np.uint64(high)).astype(np.int64)
