"""Tokenizer: OpenAI's real BPE files, exact round trips, streaming decode, integrity checks."""

from __future__ import annotations

import hashlib
import shutil

import pytest

from shared.errors import GPT2Error
from shared.tokenizer import (
    EOT_ID,
    RANKS_NAME,
    RANKS_SHA256,
    CharTokenizer,
    TextTokenizer,
    Tokenizer,
)
from tests.support.paths import BPE_DIR

TEXTS = [
    "Hello, world!",
    "naïve café — “quotes” and ‘apostrophes’",
    "emoji 👋🏽👩‍👩‍👧‍👦 and flags 🇫🇷🇯🇵",
    "日本語のテキスト, 中文, 한국어, العربية, עברית",
    "control \x00\x01\x7f and latin-1 lookalikes Ã© Ã¼ \xff\xfe",
    "combining e\u0301 and zero\u200bwidth and BOM \ufeff",
    "   leading spaces\n\n\ttabs\r\nand trailing   ",
    "<|endoftext|> is plain text here",
    "",
]


@pytest.fixture(scope="module")
def tokenizer():
    return Tokenizer(BPE_DIR)


def test_both_tokenizers_are_text_tokenizers_and_only_bpe_has_a_document_boundary(tokenizer):
    chars = CharTokenizer(list(" abc"))
    assert isinstance(tokenizer, TextTokenizer) and isinstance(chars, TextTokenizer)
    assert (tokenizer.eot_id, chars.eot_id) == (EOT_ID, None)
    decoder = chars.stream_decoder()
    assert decoder.push(chars.encode("a b")) + decoder.flush() == "a b"


def test_hello_world_has_the_known_ids(tokenizer):
    assert tokenizer.encode("Hello, world!") == [15496, 11, 995, 0]


@pytest.mark.parametrize("text", TEXTS)
def test_round_trip_is_exact(tokenizer, text):
    assert tokenizer.decode(tokenizer.encode(text)) == text


def test_endoftext_is_special_only_when_allowed(tokenizer):
    assert tokenizer.encode("<|endoftext|>", allow_endoftext=True) == [EOT_ID]
    assert EOT_ID not in tokenizer.encode("<|endoftext|>")


def test_stream_decoder_holds_back_split_characters(tokenizer):
    ids = tokenizer.encode("a 👋🏽 b")
    decoder = tokenizer.stream_decoder()
    pieces = [decoder.push([i]) for i in ids] + [decoder.flush()]
    assert "".join(pieces) == "a 👋🏽 b"
    assert all("\ufffd" not in p for p in pieces)


def test_foreign_vocabulary_files_are_rejected_and_only_the_caches_deleted(tmp_path):
    shutil.copy(BPE_DIR / "vocab.bpe", tmp_path / "vocab.bpe")
    (tmp_path / "encoder.json").write_text('{"a": 0}')
    digest = hashlib.sha256(b'{"a": 0}').hexdigest()
    with pytest.raises(GPT2Error, match=rf"encoder\.json has sha256 {digest}, not 1961.*; replace"):
        Tokenizer(tmp_path)  # a folder it was given to read: kept
    with pytest.raises(GPT2Error, match=r"; it was deleted, so run again to download it afresh\.$"):
        Tokenizer(tmp_path, cache_ranks=True)  # the models cache: deleted, downloaded again
    assert not (tmp_path / "encoder.json").exists()


def test_missing_vocabulary_file_is_named(tmp_path):
    with pytest.raises(GPT2Error, match=r"encoder\.json is missing"):
        Tokenizer(tmp_path)


@pytest.fixture
def bpe_copy(tmp_path):
    for name in ("encoder.json", "vocab.bpe"):
        shutil.copy(BPE_DIR / name, tmp_path / name)
    return tmp_path


def test_cached_ranks_are_openais_r50k_file_and_are_read_back(bpe_copy, tokenizer):
    Tokenizer(bpe_copy, cache_ranks=True)
    ranks_file = bpe_copy / RANKS_NAME
    assert hashlib.sha256(ranks_file.read_bytes()).hexdigest() == RANKS_SHA256
    # Read from the cache alone: the source files are no longer needed.
    (bpe_copy / "encoder.json").unlink()
    (bpe_copy / "vocab.bpe").unlink()
    cached = Tokenizer(bpe_copy, cache_ranks=True)
    for text in TEXTS:
        assert cached.encode(text) == tokenizer.encode(text)
    assert cached.vocabulary() == tokenizer.vocabulary()


def test_a_partial_ranks_file_is_derived_again(bpe_copy, tokenizer):
    ranks_file = bpe_copy / RANKS_NAME
    Tokenizer(bpe_copy, cache_ranks=True)
    ranks_file.write_bytes(ranks_file.read_bytes()[:1000])
    rebuilt = Tokenizer(bpe_copy, cache_ranks=True)
    assert hashlib.sha256(ranks_file.read_bytes()).hexdigest() == RANKS_SHA256
    assert rebuilt.encode(TEXTS[2]) == tokenizer.encode(TEXTS[2])


def test_folders_are_only_read_unless_caching_is_asked_for(bpe_copy):
    Tokenizer(bpe_copy)
    assert sorted(p.name for p in bpe_copy.iterdir()) == ["encoder.json", "vocab.bpe"]


def test_a_ranks_cache_that_cannot_be_written_is_skipped(bpe_copy, tokenizer):
    (bpe_copy / RANKS_NAME).mkdir()  # the rename onto it fails, as in a read-only folder
    assert Tokenizer(bpe_copy, cache_ranks=True).encode(TEXTS[1]) == tokenizer.encode(TEXTS[1])
    assert not any(p.name.endswith(".tmp") for p in bpe_copy.iterdir())
