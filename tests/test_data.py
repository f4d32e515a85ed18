"""`gpt2 prepare`: known token counts on Tiny Shakespeare, streaming that changes nothing, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from shared import data
from shared.cli import main as gpt2_cli
from shared.errors import GPT2Error
from shared.tokenizer import RANKS_NAME, Tokenizer
from tests.support.paths import BPE_DIR, TINY_SHAKESPEARE


def _tokens(folder, split):
    return np.fromfile(folder / f"{split}.bin", dtype=np.uint16)


def test_tiny_shakespeare_gives_the_known_gpt2_token_counts(tmp_path):
    meta = data.prepare([TINY_SHAKESPEARE], tmp_path, "gpt2", bpe_dir=BPE_DIR)
    assert (meta["train_tokens"], meta["val_tokens"]) == (301_966, 36_059)
    assert len(_tokens(tmp_path, "train")) == 301_966
    text = TINY_SHAKESPEARE.read_text()
    assert _tokens(tmp_path, "val").tolist() == Tokenizer(BPE_DIR).encode(
        text[int(len(text) * 0.9) :]
    )
    assert json.loads((tmp_path / "meta.json").read_text())["vocab_size"] == 50257


def test_default_tokenizer_is_downloaded_once_and_keeps_its_ranks(
    tmp_path, openai_server, models_dir, monkeypatch
):
    monkeypatch.setenv("GPT2_BASE_URL", openai_server.base_url)
    monkeypatch.setenv("GPT2_MODELS_DIR", str(models_dir))
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TINY_SHAKESPEARE.read_text()[:20_000])

    first = data.prepare([corpus], tmp_path / "first", "gpt2")
    second = data.prepare([corpus], tmp_path / "second", "gpt2")

    assert sorted(p.name for p in (models_dir / "124M").iterdir()) == [
        "encoder.json",
        RANKS_NAME,
        "vocab.bpe",
    ]
    assert openai_server.requests["encoder.json"] == 1
    assert first["train_tokens"] == second["train_tokens"] > 0
    assert (
        _tokens(tmp_path / "second", "train").tolist()
        == _tokens(tmp_path / "first", "train").tolist()
    )


def test_character_tokenizer_stores_its_alphabet(tmp_path):
    meta = data.prepare([TINY_SHAKESPEARE], tmp_path, "char")
    assert (meta["vocab_size"], meta["train_tokens"], meta["val_tokens"]) == (
        65,
        1_003_854,
        111_540,
    )
    chars = data.CharTokenizer(meta["alphabet"])
    assert chars.decode(_tokens(tmp_path, "train")[:14]) == "First Citizen:"


def test_streaming_in_small_chunks_gives_identical_tokens(tmp_path, monkeypatch):
    whole = data.prepare([TINY_SHAKESPEARE], tmp_path / "whole", "gpt2", bpe_dir=BPE_DIR)
    monkeypatch.setattr(data, "CHUNK_CHARS", 997)
    streamed = data.prepare([TINY_SHAKESPEARE], tmp_path / "streamed", "gpt2", bpe_dir=BPE_DIR)
    assert streamed == {**whole, "sources": streamed["sources"]}
    for split in ("train", "val"):
        np.testing.assert_array_equal(
            _tokens(tmp_path / "whole", split), _tokens(tmp_path / "streamed", split)
        )


def test_files_of_a_folder_are_documents_joined_by_endoftext(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text("Hello there.\n" * 30)
    (corpus / "b.txt").write_text("Kenobi here!\n" * 30)  # as long as a.txt
    meta = data.prepare([corpus], tmp_path / "out", "gpt2", val_fraction=0.5, bpe_dir=BPE_DIR)
    train = _tokens(tmp_path / "out", "train").tolist()
    assert train.count(50256) == 0  # the split falls where b.txt begins
    assert meta["sources"] == [str(corpus / "a.txt"), str(corpus / "b.txt")]
    data.prepare([corpus], tmp_path / "out2", "gpt2", val_fraction=0.25, bpe_dir=BPE_DIR)
    assert _tokens(tmp_path / "out2", "train").tolist().count(50256) == 1


def test_gpt2_prepare_command(tmp_path, capsys):
    out = tmp_path / "shakespeare_char"
    assert (
        gpt2_cli(["prepare", str(TINY_SHAKESPEARE), "--out-dir", str(out), "--tokenizer", "char"])
        == 0
    )
    assert "1,003,854 train and 111,540 val tokens" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("setup", "kwargs", "message"),
    [
        (lambda p: None, {}, "does not exist"),
        (lambda p: p.write_text(""), {}, "input text is empty"),
        (lambda p: p.write_bytes(b"ok \xff\xfe bad"), {}, "is not UTF-8 text"),
        (
            lambda p: p.write_text("abc"),
            {"val_fraction": 1.5},
            "val_fraction must be between 0 and 1",
        ),
        (
            lambda p: p.write_text("abc"),
            {"tokenizer": "sentencepiece"},
            "Unknown tokenizer 'sentencepiece'",
        ),
    ],
)
def test_bad_input_fails_with_one_sentence(tmp_path, setup, kwargs, message):
    source = tmp_path / "in.txt"
    setup(source)
    with pytest.raises(GPT2Error, match=message):
        data.prepare([source], tmp_path / "out", bpe_dir=BPE_DIR, **kwargs)


def test_a_character_vocabulary_beyond_uint16_is_refused(tmp_path):
    source = tmp_path / "wide.txt"
    source.write_text(
        "".join(chr(c) for c in range(0x100, 0x100 + 70_000) if not 0xD800 <= c <= 0xDFFF)
    )
    with pytest.raises(GPT2Error, match="more than the 65,536 that uint16"):
        data.prepare([source], tmp_path / "out", "char")
