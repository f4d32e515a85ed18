"""The decode driver: bucketing avoids recompiles, lengths are validated, rows exit early."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest

from functional_impl.backend import backend
from shared import generation
from shared.config import GPT2Config
from shared.generation import Generator, prompt_bucket, slot_bucket
from shared.sampling import SamplingParams

CONFIG = GPT2Config(n_embd=32, n_head=4, n_layer=2, n_vocab=256, n_ctx=128)


@pytest.fixture(scope="module")
def generator():
    return Generator(backend, backend.init(CONFIG, jax.random.PRNGKey(0)), CONFIG)


def test_buckets():
    assert [prompt_bucket(n) for n in (1, 16, 17, 33, 1000)] == [16, 16, 32, 64, 1024]
    assert [slot_bucket(n) for n in (1, 64, 65, 300)] == [64, 64, 128, 320]


def test_new_prompt_lengths_and_budgets_in_a_bucket_do_not_recompile(generator):
    generator.generate([[1, 2, 3]], 10)
    compiled = generation._prefill._cache_size(), generation._decode._cache_size()
    generator.generate([[1, 2, 3, 4, 5, 6, 7]], 20)
    generator.generate([[9] * 16], 30)
    assert (generation._prefill._cache_size(), generation._decode._cache_size()) == compiled


def test_prompt_plus_new_tokens_beyond_the_context_is_refused(generator):
    with pytest.raises(ValueError, match=r"100 tokens and 29 new tokens.*129 in all.*128 tokens"):
        generator.generate([[1] * 100], 29)


def test_the_context_can_be_filled_exactly(generator):
    [completion] = generator.generate([[1] * 100], 28)
    assert len(completion.tokens) == 28


@pytest.mark.parametrize(
    ("prompts", "max_new", "message"),
    [
        ([[1]], 0, "max_new_tokens"),
        ([], 5, "at least one prompt"),
        ([[1], []], 5, "Prompt 1 is empty"),
        (
            [[1, 256]],
            5,
            r"Prompt 0 holds 256, which is not a token id of the model's vocabulary "
            r"of 256 ids \(integers 0 to 255\)",
        ),
        ([[-1]], 5, "holds -1, which is not a token id"),
        ([[1.0]], 5, "holds 1.0, which is not a token id"),
        ([[1]], True, "max_new_tokens must be an integer >= 1, got True"),
    ],
)
def test_bad_requests_fail_with_a_sentence(generator, prompts, max_new, message):
    with pytest.raises(ValueError, match=message):
        generator.generate(prompts, max_new)


def test_loop_exits_when_every_row_has_stopped(generator):
    free = generator.generate([[1, 2], [3, 4]], 30)
    stops = {free[0].tokens[0], free[1].tokens[0]}
    chunks = list(generator.stream([[1, 2], [3, 4]], 30, stop_tokens=stops, chunk=30))
    assert len(chunks) == 1  # both rows stopped on their first token: no decode call at all
    assert all(chunks[0][1])


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"stop_tokens": [-97]}, r"stop_tokens holds -97, which is not a token id .* 0 to 255\)"),
        ({"stop_tokens": [256]}, "stop_tokens holds 256, which is not a token id"),
        ({"seed": None}, r"seed must be an integer in \[-2\*\*63, 2\*\*63\), got None"),
        ({"seed": 2**64}, "seed must be an integer"),
        (
            {"keys": generation.row_keys(0, 3)},
            "keys holds 3 PRNG keys for 2 prompts; give one each",
        ),
        ({"chunk": 0}, r"chunk must be an integer >= 1 \(or None: all tokens at once\), got 0"),
        ({"chunk": -1}, "chunk must be an integer >= 1"),
    ],
)
def test_bad_stream_options_fail_with_a_sentence(generator, options, message):
    with pytest.raises(ValueError, match=message):
        next(generator.stream([[1, 2], [3]], 5, **options))


def test_numpy_prompts_and_counts_are_token_ids_and_counts(generator):
    expected = generator.generate([[1, 2, 3], [4, 5, 6]], 5)
    assert generator.generate(np.array([[1, 2, 3], [4, 5, 6]]), np.int64(5)) == expected
    assert generator.generate([np.array([1, 2, 3]), (4, 5, 6)], 5, seed=np.int32(0)) == expected


def test_a_context_that_is_not_a_power_of_two_can_be_filled():
    """Prompts are padded to a power-of-two bucket, which must stop at the context."""
    config = dataclasses.replace(CONFIG, n_ctx=48)
    short = Generator(backend, backend.init(config, jax.random.PRNGKey(0)), config)
    [completion] = short.generate([list(range(40))], 8)
    assert len(completion.tokens) == 8


def test_the_repetition_penalty_counts_a_rows_prompt_but_not_its_padding():
    """Prompts are left-padded with token 0, which is made here the most likely continuation (its
    embedding, tied to the output, a scaled copy of the favourite token's). Counted as seen, the
    padding would take it from the row; a 0 in the prompt must."""
    params = backend.init(CONFIG, jax.random.PRNGKey(0))
    candidates = np.random.default_rng(0).integers(1, CONFIG.n_vocab, (64, 3))
    positions = np.broadcast_to(np.arange(3), candidates.shape)
    logits, _ = backend.apply(params, candidates, positions, None, config=CONFIG)
    best = np.asarray(logits[:, -1].argmax(-1))
    favourite = int(np.bincount(best).argmax())
    params = {**params, "wte": params["wte"].at[0].set(1.01 * params["wte"][favourite])}
    generator = Generator(backend, params, CONFIG)
    prompt = candidates[int(np.argmax(best == favourite))].tolist()
    harsh = SamplingParams(0.0, repetition_penalty=1e6)
    assert generator.generate([prompt], 1)[0].tokens == [0]
    assert generator.generate([prompt], 1, harsh)[0].tokens == [0]
    assert generator.generate([[0, *prompt]], 1, harsh)[0].tokens != [0]
