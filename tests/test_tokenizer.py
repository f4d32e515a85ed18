"""Tokenizer: OpenAI's real BPE files, exact round trips, streaming decode, integrity checks."""

from __future__ import annotations

import shutil

import pytest

from shared.errors import GPT2Error
from shared.tokenizer import EOT_ID, Tokenizer
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


def test_foreign_vocabulary_files_are_rejected(tmp_path):
    shutil.copy(BPE_DIR / "vocab.bpe", tmp_path / "vocab.bpe")
    (tmp_path / "encoder.json").write_text('{"a": 0}')
    with pytest.raises(GPT2Error, match=r"encoder\.json.*not OpenAI's GPT-2 file"):
        Tokenizer(tmp_path)


def test_missing_vocabulary_file_is_named(tmp_path):
    with pytest.raises(GPT2Error, match=r"encoder\.json is missing"):
        Tokenizer(tmp_path)
