"""Config: the four sizes, their aliases, parameter counts and clear errors."""

from __future__ import annotations

import pytest

from shared.config import MODEL_SIZES, GPT2Config, config_for_size, resolve_model_size


@pytest.mark.parametrize(
    ("size", "layers", "heads", "embd", "n_params"),
    [
        ("124M", 12, 12, 768, 124_439_808),
        ("355M", 24, 16, 1024, 354_823_168),
        ("774M", 36, 20, 1280, 774_030_080),
        ("1558M", 48, 25, 1600, 1_557_611_200),
    ],
)
def test_sizes_have_openai_shapes(size, layers, heads, embd, n_params):
    config = MODEL_SIZES[size]
    assert (config.n_layer, config.n_head, config.n_embd) == (layers, heads, embd)
    assert (config.n_vocab, config.n_ctx) == (50257, 1024)
    assert config.n_params == n_params


@pytest.mark.parametrize(
    ("alias", "size"),
    [("gpt2", "124M"), ("gpt2-medium", "355M"), ("GPT2-Large", "774M"), ("gpt2-xl", "1558M"),
     ("355m", "355M")],
)  # fmt: skip
def test_aliases_resolve(alias, size):
    assert resolve_model_size(alias) == size


def test_unknown_size_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"Unknown model size '7B'.*124M, 355M, 774M, 1558M, gpt2"):
        config_for_size("7B")


def test_hparams_round_trip_and_reject_unknown_keys():
    config = GPT2Config(n_embd=64, n_head=4, n_layer=3, n_ctx=256)
    assert GPT2Config.from_hparams(config.to_hparams()) == config
    with pytest.raises(ValueError, match="n_mystery"):
        GPT2Config.from_hparams({**config.to_hparams(), "n_mystery": 1})


def test_heads_must_divide_the_width():
    with pytest.raises(ValueError, match=r"n_embd \(100\) must be divisible by n_head \(3\)"):
        GPT2Config(n_embd=100, n_head=3)
