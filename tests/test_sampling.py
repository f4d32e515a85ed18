"""Samplers: greedy is argmax, top-k/top-p never leave their sets, settings are validated."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from shared.sampling import (
    SamplingParams,
    filter_logits,
    ngram_completions,
    penalize_repeats,
    sample,
)
from tests.support.ngrams import hf_ngram_bans

VOCAB = 64
DRAWS = 4000


def _logits(seed=0, rows=4):
    return jax.random.normal(jax.random.PRNGKey(seed), (rows, VOCAB)) * 3


def _draw(logits, params, n=DRAWS):
    keys = jax.random.split(jax.random.PRNGKey(1), n * logits.shape[0]).reshape(
        n, logits.shape[0], 2
    )
    fn = jax.jit(jax.vmap(lambda k: sample(logits, k, *params.as_arrays())))
    return np.asarray(fn(keys))  # [n, rows]


def _top_p_set(row_logits, top_p, top_k=None):
    order = np.argsort(-row_logits)
    if top_k:
        order = order[:top_k]
    probs = np.exp(row_logits[order] - row_logits[order].max())
    probs /= probs.sum()
    before = np.cumsum(probs) - probs
    return set(order[before < top_p].tolist())


def test_temperature_zero_is_argmax():
    logits = _logits()
    tokens = _draw(logits, SamplingParams(temperature=0.0), n=3)
    assert (tokens == np.argmax(np.asarray(logits), axis=-1)).all()


def test_a_tiny_temperature_samples_the_argmax_of_negative_logits():
    logits = jnp.array([[-80.0, -60.0, -70.0, -90.0]])
    tokens = _draw(logits, SamplingParams(temperature=1e-37), n=3)
    assert (tokens == 1).all()


def test_top_k_never_samples_outside_the_k_most_likely():
    logits = _logits()
    tokens = _draw(logits, SamplingParams(temperature=1.5, top_k=5))
    for row in range(logits.shape[0]):
        allowed = set(np.argsort(-np.asarray(logits[row]))[:5].tolist())
        assert set(tokens[:, row].tolist()) == allowed  # every member drawn, nothing else


def test_a_top_k_past_the_vocabulary_keeps_every_token_even_beyond_int32():
    logits = _logits(seed=4)
    everything = _draw(logits, SamplingParams(temperature=1.0), n=64)
    for top_k in (logits.shape[-1], 2**31, 10**12):
        assert (
            _draw(logits, SamplingParams(temperature=1.0, top_k=top_k), n=64) == everything
        ).all()


@pytest.mark.parametrize("top_p", [0.3, 0.75, 0.95])
def test_top_p_never_samples_outside_the_nucleus(top_p):
    logits = _logits(seed=2)
    tokens = _draw(logits, SamplingParams(temperature=1.0, top_p=top_p))
    for row in range(logits.shape[0]):
        nucleus = _top_p_set(np.asarray(logits[row]), top_p)
        drawn = set(tokens[:, row].tolist())
        assert drawn <= nucleus
        assert len(drawn) > 1 or len(nucleus) == 1


def test_top_k_and_top_p_compose():
    logits = _logits(seed=3)
    tokens = _draw(logits, SamplingParams(temperature=1.0, top_k=8, top_p=0.6))
    for row in range(logits.shape[0]):
        allowed = _top_p_set(np.asarray(logits[row]), 0.6, top_k=8)
        assert set(tokens[:, row].tolist()) <= allowed


def _boundary_mass(row_logits, value, top_k):
    """float64 probability mass ranked strictly above `value` (within the top-k by rank)."""
    row = row_logits.astype(np.float64)
    top = np.sort(row)[::-1][: top_k or len(row)]
    probs = np.exp(top - top.max())
    return probs[top > value].sum() / probs.sum()


@pytest.mark.parametrize("vocab", [1000, 50257])
@pytest.mark.parametrize(("top_k", "top_p"), [(0, 0.9), (0, 0.3), (40, 1.0), (40, 0.6), (0, 0.999)])
def test_filter_keeps_the_sorted_reference_set_up_to_rounding_at_the_boundary(vocab, top_k, top_p):
    logits = jax.random.normal(jax.random.PRNGKey(vocab), (3, vocab)) * 2
    kept = np.isfinite(np.asarray(filter_logits(logits, jnp.int32(top_k), jnp.float32(top_p))))
    for row in range(3):
        row_logits = np.asarray(logits[row])
        reference = _top_p_set(row_logits, np.float32(top_p), top_k=top_k)
        expected = row_logits >= row_logits[list(reference)].min()
        for token in np.flatnonzero(kept[row] != expected):
            # Only a token whose higher-ranked mass equals top_p to float32 rounding may differ.
            mass = _boundary_mass(row_logits, row_logits[token], top_k)
            assert abs(mass - top_p) < 1e-5, (row, token, mass)


def test_filter_keeps_ties_at_the_threshold():
    logits = jnp.asarray([[3.0, 1.0, 3.0, 0.0, 3.0, -jnp.inf, 1.0]])
    top_2 = filter_logits(logits, jnp.int32(2), jnp.float32(1.0))
    assert np.isfinite(np.asarray(top_2)).tolist() == [
        [True, False, True, False, True, False, False]
    ]
    # The three 3.0s hold ~86% of the mass, so top_p=0.5 keeps them all and nothing else.
    nucleus = filter_logits(logits, jnp.int32(0), jnp.float32(0.5))
    assert np.isfinite(np.asarray(nucleus)).tolist() == np.isfinite(np.asarray(top_2)).tolist()
    everything_finite = filter_logits(logits, jnp.int32(0), jnp.float32(0.9999))
    assert np.isfinite(np.asarray(everything_finite)).sum() == 6


def test_top_p_weighs_everything_top_k_keeps_ties_included():
    """Top-2 keeps all four tokens here (three tie for second place), and token 0 alone holds only
    half of their probability, so top_p=0.6 needs the tied ones too; as top-k then top-p."""
    logits = jnp.log(jnp.asarray([[3.0, 1.0, 1.0, 1.0, 0.01]]))
    both = filter_logits(logits, jnp.int32(2), jnp.float32(0.6))
    top_k = filter_logits(logits, jnp.int32(2), jnp.float32(1.0))
    one_after_the_other = filter_logits(top_k, jnp.int32(0), jnp.float32(0.6))
    assert np.isfinite(np.asarray(both)).tolist() == [[True, True, True, True, False]]
    np.testing.assert_array_equal(both, one_after_the_other)


def test_sampling_follows_the_softmax_distribution():
    logits = jnp.log(jnp.asarray([[0.5, 0.3, 0.2] + [1e-9] * 5]))
    tokens = _draw(logits, SamplingParams(temperature=1.0))[:, 0]
    frequencies = np.bincount(tokens, minlength=8)[:3] / len(tokens)
    np.testing.assert_allclose(frequencies, [0.5, 0.3, 0.2], atol=0.03)


def test_each_row_draws_with_its_own_key():
    logits = jnp.zeros((2, VOCAB))
    keys = jnp.stack([jax.random.PRNGKey(5), jax.random.PRNGKey(5)])
    a = sample(logits, keys, *SamplingParams(1.0).as_arrays())
    assert a[0] == a[1]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"temperature": -0.1}, r"^temperature must be .*, got -0\.1\.$"),
        ({"temperature": float("nan")}, r"^temperature must be .*, got nan\.$"),
        ({"top_k": 0}, r"^top_k must be an integer >= 1 \(or unset\), got 0\.$"),
        ({"top_k": 2.5}, r"^top_k must be .*, got 2\.5\.$"),
        ({"top_p": 0.0}, r"^top_p must be in \(0, 1\], got 0\.0\.$"),
        ({"top_p": 1.01}, r"^top_p must be in \(0, 1\], got 1\.01\.$"),
        ({"temperature": True}, r"^temperature must be .*, got True\.$"),
        ({"top_k": np.bool_(True)}, r"^top_k must be .*, got np\.True_\.$"),
        (
            {"repetition_penalty": 0},
            r"^repetition_penalty must be a finite number > 0 .*, got 0\.$",
        ),
        ({"repetition_penalty": -1.2}, r"^repetition_penalty must be .*, got -1\.2\.$"),
        ({"repetition_penalty": float("inf")}, r"^repetition_penalty must be .*, got inf\.$"),
        ({"repetition_penalty": True}, r"^repetition_penalty must be .*, got True\.$"),
        (
            {"no_repeat_ngram_size": -1},
            r"^no_repeat_ngram_size must be an integer >= 0 .*, got -1\.$",
        ),
        ({"no_repeat_ngram_size": 2.0}, r"^no_repeat_ngram_size must be .*, got 2\.0\.$"),
    ],
)
def test_bad_settings_fail_with_a_sentence_naming_them(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SamplingParams(**kwargs)


def test_numpy_scalars_are_settings_like_python_numbers():
    given = SamplingParams(np.float32(0.5), np.int64(40), np.float64(0.9), np.float32(1.25))
    assert given == SamplingParams(0.5, 40, 0.9, 1.25)
    assert (type(given.temperature), type(given.top_k), type(given.top_p)) == (float, int, float)
    assert type(given.repetition_penalty) is float


def test_the_repetition_penalty_weighs_down_seen_tokens_whatever_their_sign():
    """CTRL's rule, as Hugging Face applies it: positive logits divided, negative multiplied."""
    logits = jnp.array([[2.0, -2.0, 3.0, -0.5, 0.0]])
    seen = jnp.array([[True, True, False, False, True]])
    got = penalize_repeats(logits, seen, jnp.float32(2.0))
    np.testing.assert_array_equal(got, [[1.0, -4.0, 3.0, -0.5, 0.0]])
    np.testing.assert_array_equal(penalize_repeats(logits, seen, jnp.float32(1.0)), logits)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 24, 25])
def test_ngram_completions_ban_what_hugging_faces_rule_bans(n):
    """Random rows over 6 token ids (so n-grams recur), left-padded, with slots past the
    sequence's end holding stale ids that must not count."""
    rng = np.random.default_rng(n)
    slots, end, vocab = 24, 19, 6
    history = rng.integers(0, vocab, (16, slots))
    pads = rng.integers(0, 8, 16)
    valid = (np.arange(slots)[None] >= pads[:, None]) & (np.arange(slots)[None] < end)
    banned = ngram_completions(jnp.asarray(history), jnp.asarray(valid), jnp.int32(end), n, vocab)
    for row in range(16):
        expected = hf_ngram_bans(history[row, pads[row] : end].tolist(), n)
        assert set(np.flatnonzero(banned[row]).tolist()) == expected
    assert np.asarray(banned).any() == (n <= 4)  # n-grams of 24 tokens or more never recur here
