"""Stop strings: text is cut before the first stop string to complete and never released past it."""

from __future__ import annotations

import pytest

from shared.stopping import StopStringCutter, tokens_containing
from shared.tokenizer import EOT_ID, Tokenizer
from tests.support.paths import BPE_DIR


def _feed(stops, pieces):
    cutter = StopStringCutter(stops)
    released = [cutter.push(p) for p in pieces]
    return released, cutter


def test_text_is_cut_before_a_stop_string_split_across_pieces():
    released, cutter = _feed(["The end"], ["Hello Th", "e e", "x", "ample. The e", "nd! more"])
    assert "".join(released) == "Hello The example. "
    assert cutter.stopped and cutter.flush() == ""


def test_a_possible_stop_prefix_is_held_back_then_released():
    released, cutter = _feed(["\n\n"], ["line\n", "next"])
    assert released == ["line", "\nnext"]
    assert not cutter.stopped


def test_the_earliest_of_several_stop_strings_wins():
    released, _ = _feed(["b", "xyz"], ["aaxyzab"])
    assert released == ["aa"]


@pytest.mark.parametrize("size", [1, 2, 3, 5, 100])
def test_the_stop_string_completed_first_wins_however_the_text_arrives(size):
    text, stops = "hello world, hello there", ["hello world, hello", "o w"]
    released, _ = _feed(stops, [text[i : i + size] for i in range(0, len(text), size)])
    assert "".join(released) == "hell"  # "o w" completes before the longer stop that starts earlier


def test_held_text_is_flushed_when_the_row_ends_without_a_stop():
    released, cutter = _feed(["STOP"], ["go ST"])
    assert released == ["go "]
    assert cutter.flush() == "ST"


@pytest.fixture(scope="module")
def tokenizer():
    return Tokenizer(BPE_DIR)


def test_tokens_containing_a_newline_include_the_newline_tokens(tokenizer):
    ids = tokens_containing(tokenizer, ["\n"])
    assert {198, 628} <= ids  # "\n" and "\n\n"
    vocabulary = tokenizer.vocabulary()
    assert all(b"\n" in vocabulary[i] for i in ids)
    assert all(vocabulary[i] == tokenizer.decode_bytes([i]) for i in range(tokenizer.n_vocab))


def test_endoftext_stop_string_matches_the_eot_token(tokenizer):
    assert EOT_ID in tokens_containing(tokenizer, ["<|endoftext|>"])
