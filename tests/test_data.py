"""`gpt2 prepare`: known token counts on Tiny Shakespeare, streaming that changes nothing, errors."""

from __future__ import annotations

import json
import random
import re

import jax
import numpy as np
import pytest

from shared import data, text_input
from shared.cli import main as gpt2_cli
from shared.errors import GPT2Error
from shared.tokenizer import RANKS_NAME, CharTokenizer, Tokenizer
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
    chars = CharTokenizer(meta["alphabet"])
    assert chars.decode(_tokens(tmp_path, "train")[:14]) == "First Citizen:"


def test_text_prepared_with_another_alphabet_gets_its_ids(tmp_path):
    """`alphabet_from` a character-level folder: the new text's ids are that alphabet's, even
    where the text lacks some of its characters."""
    (tmp_path / "wide.txt").write_text("abcdz " * 20)
    (tmp_path / "narrow.txt").write_text("dab " * 30)
    data.prepare([tmp_path / "wide.txt"], tmp_path / "wide", "char")
    meta = data.prepare([tmp_path / "narrow.txt"], tmp_path / "narrow", "char",
                        alphabet_from=tmp_path / "wide")  # fmt: skip
    assert (meta["alphabet"], meta["vocab_size"]) == ([" ", "a", "b", "c", "d", "z"], 6)
    assert _tokens(tmp_path / "narrow", "train")[:4].tolist() == [4, 1, 2, 0]


@pytest.mark.parametrize(
    ("text", "tokenizer", "source", "message"),
    [
        ("dab?", "char", "wide", r"characters that the alphabet of .*wide lacks, '\?'; a "),
        ("dab", "gpt2", "wide", r"alphabet_from gives the characters of the char tokenizer, not"),
        ("dab", "char", "bpe", r"bpe holds gpt2-tokenized data, not characters; alphabet_from"),
        ("dab", "char", "nothing", r"nothing is neither a folder that `gpt2 prepare` wrote nor"),
    ],
)
def test_an_alphabet_that_cannot_read_the_text_is_refused(tmp_path, text, tokenizer, source,
                                                          message):  # fmt: skip
    (tmp_path / "wide.txt").write_text("abcdz " * 20)
    data.prepare([tmp_path / "wide.txt"], tmp_path / "wide", "char")
    data.prepare([tmp_path / "wide.txt"], tmp_path / "bpe", "gpt2", bpe_dir=BPE_DIR)
    (tmp_path / "new.txt").write_text(text * 30)
    with pytest.raises(GPT2Error, match=message):
        data.prepare([tmp_path / "new.txt"], tmp_path / "out", tokenizer, bpe_dir=BPE_DIR,
                     alphabet_from=tmp_path / source)  # fmt: skip
    assert not (tmp_path / "out").exists()


def test_streaming_in_small_chunks_gives_identical_tokens(tmp_path, monkeypatch):
    whole = data.prepare([TINY_SHAKESPEARE], tmp_path / "whole", "gpt2", bpe_dir=BPE_DIR)
    monkeypatch.setattr(text_input, "CHUNK_BYTES", 997)
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
        (lambda p: None, {}, "{source} does not exist; give text files or folders of them."),
        (lambda p: p.write_text(""), {}, "input text is empty"),
        (lambda p: p.write_bytes(b"ok \xff\xfe bad"), {}, "is not UTF-8 text"),
        (
            lambda p: p.write_text("abc"),
            {"val_fraction": 1.5},
            r"val_fraction must be between 0 and 1 \(exclusive\), got 1\.5\.",
        ),
        (
            lambda p: p.write_text("abc"),
            {"val_fraction": 1e-17},
            r"val_fraction 1e-17 leaves the val split empty \(3 train and 0 val characters\)",
        ),
        (
            lambda p: p.write_text("abc"),
            {"val_fraction": 0.9},
            r"val_fraction 0.9 leaves the train split empty \(0 train and 3 val characters\)",
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
    with pytest.raises(GPT2Error) as error:
        data.prepare([source], tmp_path / "out", bpe_dir=BPE_DIR, **kwargs)
    assert re.search(message.replace("{source}", re.escape(str(source))), str(error.value))


def test_an_output_folder_that_is_a_file_is_refused(tmp_path):
    source = tmp_path / "in.txt"
    source.write_text("abc")
    with pytest.raises(GPT2Error, match=r"Cannot write out_dir .*in.txt \(it is a file\)"):
        data.prepare([source], source, "char")
    assert source.read_text() == "abc"


def test_a_character_vocabulary_beyond_uint16_is_refused(tmp_path):
    source = tmp_path / "wide.txt"
    source.write_text(
        "".join(chr(c) for c in range(0x100, 0x100 + 70_000) if not 0xD800 <= c <= 0xDFFF)
    )
    with pytest.raises(GPT2Error, match="more than the 65,536 that uint16"):
        data.prepare([source], tmp_path / "out", "char")


def _prepared_in_chunks_equals_encoding_it_whole(text, folder, monkeypatch, chunk):
    source = folder / "in.txt"
    source.write_bytes(text.encode())
    monkeypatch.setattr(text_input, "CHUNK_BYTES", chunk)
    data.prepare([source], folder / "out", "gpt2", bpe_dir=BPE_DIR)
    boundary, tokenizer = int(len(text) * 0.9), Tokenizer(BPE_DIR)
    assert _tokens(folder / "out", "train").tolist() == tokenizer.encode(text[:boundary])
    assert _tokens(folder / "out", "val").tolist() == tokenizer.encode(text[boundary:])


def test_crlf_text_prepared_in_chunks_equals_encoding_it_whole(tmp_path, monkeypatch):
    text = TINY_SHAKESPEARE.read_text()[:100_000].replace("\n", "\r\n")
    _prepared_in_chunks_equals_encoding_it_whole(text, tmp_path, monkeypatch, chunk=997)


@pytest.mark.parametrize("chunk", [1, 7])
def test_any_whitespace_prepared_in_chunks_equals_encoding_it_whole(tmp_path, monkeypatch, chunk):
    """Runs of every kind of whitespace (and characters Python but not the pre-tokenizer calls
    whitespace, like \\x1c) between words, contractions, digits and punctuation."""
    spaces = [chr(c) for c in range(0x3001) if chr(c).isspace()] + ["\u200b", "\ufeff"]
    words = ["a", "bc", "'s", "'re", "1", "23", ".", "!?", "é", "字", "  ", "\r\n", "\n\n"]
    rng = random.Random(0)
    text = "".join(rng.choice(spaces + words) for _ in range(20_000))
    _prepared_in_chunks_equals_encoding_it_whole(text, tmp_path, monkeypatch, chunk)


def test_files_in_hidden_folders_are_skipped(tmp_path):
    corpus = tmp_path / "corpus"
    (corpus / ".git" / "objects").mkdir(parents=True)
    (corpus / ".git" / "objects" / "ab").write_text("not text for training")
    (corpus / ".notes.txt").write_text("hidden file")
    (corpus / "a.txt").write_text("Hello there.\n" * 30)
    assert data.text_files([corpus]) == [corpus / "a.txt"]


@pytest.mark.parametrize("inside", ["prepared", "."])
def test_preparing_again_into_an_input_folder_does_not_read_its_own_output(tmp_path, inside):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text("To be, or not to be, that is the question.\n" * 40)
    first = data.prepare([corpus], corpus / inside, "char")
    again = data.prepare([corpus], corpus / inside, "char")
    assert again == first
    assert again["sources"] == [str(corpus / "a.txt")]


def test_an_interrupted_preparation_leaves_the_earlier_one_whole(tmp_path, monkeypatch):
    (tmp_path / "old.txt").write_text("Hello there.\n" * 50)
    before = data.prepare([tmp_path / "old.txt"], tmp_path / "out", "char")
    files = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()}
    write_tokens = data._write_tokens

    def interrupted_in_val(path, *args):
        if "val" in path.name:
            raise KeyboardInterrupt  # Ctrl-C once the new train split is written
        return write_tokens(path, *args)

    monkeypatch.setattr(data, "_write_tokens", interrupted_in_val)
    (tmp_path / "new.txt").write_text("Something else entirely. " * 80)
    with pytest.raises(KeyboardInterrupt):
        data.prepare([tmp_path / "new.txt"], tmp_path / "out", "gpt2", bpe_dir=BPE_DIR)
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()} == files
    assert data.TokenDataset(tmp_path / "out", "train", 8).meta == before


def test_token_files_that_disagree_with_their_meta_are_refused(tmp_path):
    (tmp_path / "in.txt").write_text("Hello there.\n" * 50)
    meta = data.prepare([tmp_path / "in.txt"], tmp_path, "char")
    with (tmp_path / "train.bin").open("ab") as handle:
        handle.write(b"\0\0")
    with pytest.raises(
        GPT2Error,
        match=f"holds {meta['train_tokens'] + 1} tokens but .* says {meta['train_tokens']}: the "
        "folder changed after `gpt2 prepare`; run it again",
    ):
        data.TokenDataset(tmp_path, "train", 8)


def test_invalid_utf8_is_named_by_its_offset_in_the_file(tmp_path, monkeypatch):
    source = tmp_path / "in.txt"
    source.write_bytes("é".encode() * 3000 + b"\xff rest")  # é is two bytes
    monkeypatch.setattr(text_input, "CHUNK_BYTES", 997)
    with pytest.raises(GPT2Error, match=r"is not UTF-8 text \(invalid start byte at byte 6,000\)"):
        data.prepare([source], tmp_path / "out", "char")


def _write_split(folder, split, size_in_bytes):
    folder.mkdir(exist_ok=True)
    (folder / "meta.json").write_text(json.dumps({"tokenizer": "char", "vocab_size": 1}))
    with (folder / f"{split}.bin").open("wb") as handle:
        handle.truncate(size_in_bytes)  # sparse: no disk is used


def test_an_empty_split_is_refused_before_it_is_mapped(tmp_path):
    _write_split(tmp_path, "val", 0)
    with pytest.raises(GPT2Error, match=r"The val split of .* has 0 tokens, fewer than one block"):
        data.TokenDataset(tmp_path, "val", 8)


def test_batches_of_a_split_beyond_int32_start_anywhere_in_it(tmp_path):
    tokens = 3 << 31
    _write_split(tmp_path, "train", 2 * tokens)
    dataset = data.TokenDataset(tmp_path, "train", 8)
    starts = dataset.starts(jax.random.PRNGKey(0), 1, 64)
    assert starts.min() >= 0 and starts.max() < tokens - 8
    assert (starts >= 1 << 32).any()
    assert dataset.batch(jax.random.PRNGKey(0), 1, 64, slice(2, 4)).shape == (2, 9)


def test_batches_of_a_smaller_split_are_drawn_as_they_always_were(tmp_path):
    (tmp_path / "in.txt").write_text(TINY_SHAKESPEARE.read_text()[:10_000])
    data.prepare([tmp_path / "in.txt"], tmp_path / "out", "char")
    dataset, key = data.TokenDataset(tmp_path / "out", "train", 16), jax.random.PRNGKey(3)
    drawn = jax.random.randint(jax.random.fold_in(key, 5), (4,), 0, 9_000 - 16)
    windows = np.asarray(drawn)[:, None] + np.arange(17)
    np.testing.assert_array_equal(
        dataset.batch(key, 5, 4), _tokens(tmp_path / "out", "train")[windows]
    )
