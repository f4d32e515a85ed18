"""Beam search (`shared.beam_search`): it finds what an exhaustive search finds, scores what it
returns as the model does, and a prompt's hypotheses do not depend on its batch."""

from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from shared import kv_cache, program_cache
from shared.backend import get_backend
from shared.beam_search import BeamParams, candidates_kept, search
from shared.config import GPT2Config
from shared.generation import Generator
from shared.params import init_params

FUNCTIONAL = get_backend("functional")
SMALL_VOCAB = GPT2Config(n_embd=32, n_head=4, n_layer=2, n_vocab=5, n_ctx=64)
TINY = GPT2Config(n_embd=32, n_head=4, n_layer=2, n_vocab=300, n_ctx=64)
PROMPTS = [[5, 6, 7], [11, 12, 13, 14, 15, 16, 17, 18, 19], [42]]


def generator(config: GPT2Config, seed: int = 0, sharpness: float = 6.0) -> Generator:
    """A random model; token embeddings `sharpness` times GPT-2's initial scale make its
    next-token distributions uneven, so the beams' scores differ and stop tokens can win."""
    tree = init_params(config, jax.random.PRNGKey(seed))
    tree = {**tree, "wte": tree["wte"] * sharpness}
    return Generator(FUNCTIONAL, FUNCTIONAL.from_canonical(tree, config), config)


def sequence_log_probs(gen: Generator, prompt: list[int], tokens: list[int]) -> np.ndarray:
    """Each of `tokens`' log-probabilities after `prompt`, from one full forward pass."""
    return continuation_log_probs(gen, prompt, np.asarray([tokens]))[0]


def continuation_log_probs(gen: Generator, prompt: list[int], tokens: np.ndarray) -> np.ndarray:
    """[n, length]: the log-probability of each of the n continuations' tokens after `prompt`."""
    ids = jnp.asarray(np.concatenate([np.tile(prompt, (len(tokens), 1)), tokens], axis=1))
    positions = jnp.broadcast_to(jnp.arange(ids.shape[1]), ids.shape)
    logits, _ = FUNCTIONAL.apply(gen.params, ids, positions, None, config=gen.config)
    log_probs = np.asarray(jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1))
    steps = np.arange(len(prompt) - 1, ids.shape[1] - 1)
    return np.take_along_axis(log_probs[:, steps], tokens[:, :, None], axis=2)[..., 0]


def test_enough_beams_find_the_most_likely_continuations_of_an_exhaustive_search():
    """With a beam for every prefix (vocabulary ** (length - 1)) nothing is pruned, so the best
    hypotheses are the most likely of all vocabulary ** length continuations. Four tokens, so
    that beams continue from caches their earlier steps reordered."""
    gen, length, prompt = generator(SMALL_VOCAB, seed=3), 4, [1, 2, 3]
    every = np.array(list(itertools.product(range(SMALL_VOCAB.n_vocab), repeat=length)))
    totals = continuation_log_probs(gen, prompt, every).sum(axis=1)
    ranked = sorted(zip(totals, every.tolist(), strict=True), key=lambda pair: -pair[0])[:4]
    beams = BeamParams(SMALL_VOCAB.n_vocab ** (length - 1), num_return=4)
    [found] = search(gen, [prompt], length, beams)
    assert [h.tokens for h in found] == [s for _, s in ranked]
    np.testing.assert_allclose([h.score for h in found], [t / length for t, _ in ranked], 1e-5)
    assert all(h.finish_reason == "length" for h in found)


def test_one_beam_is_greedy_decoding_with_its_stop_tokens():
    gen = generator(TINY)
    free = gen.generate(PROMPTS, 10)
    stop = free[1].tokens[4]
    greedy = gen.generate(PROMPTS, 10, stop_tokens={stop})
    beams = search(gen, PROMPTS, 10, BeamParams(1), stop_tokens={stop})
    assert [[h.tokens] for h in greedy] == [[h.tokens for h in row] for row in beams]
    assert beams[1][0].stop_token == stop and beams[1][0].finish_reason == "stop"


@pytest.fixture(scope="module")
def stopped_search():
    """Five beams over a batch of prompts, with a stop token the hypotheses often reach."""
    gen = generator(TINY)
    [free] = search(gen, [PROMPTS[0]], 8, BeamParams(5))
    stop = free[0].tokens[-1]
    return gen, stop, search(gen, PROMPTS, 8, BeamParams(5, num_return=5), stop_tokens={stop})


def test_scores_are_the_model_log_probs_over_the_length_and_rank_the_hypotheses(stopped_search):
    gen, stop, results = stopped_search
    reasons = set()
    for prompt, hypotheses in zip(PROMPTS, results, strict=True):
        for h in hypotheses:
            ids = h.tokens + ([h.stop_token] if h.stop_token is not None else [])
            assert stop not in h.tokens
            np.testing.assert_allclose(
                h.score, sequence_log_probs(gen, prompt, ids).sum() / len(ids), rtol=1e-5
            )
            reasons.add(h.finish_reason)
        scores = [h.score for h in hypotheses]
        assert scores == sorted(scores, reverse=True)
        assert len({tuple(h.tokens) for h in hypotheses}) == len(hypotheses)
    assert reasons == {"stop", "length"}


def test_a_prompt_finds_the_same_hypotheses_alone_as_in_a_left_padded_batch(stopped_search):
    gen, stop, results = stopped_search
    for prompt, batched in zip(PROMPTS, results, strict=True):
        [alone] = search(gen, [prompt], 8, BeamParams(5, num_return=5), stop_tokens={stop})
        assert [h.tokens for h in alone] == [h.tokens for h in batched]
        np.testing.assert_allclose([h.score for h in alone], [h.score for h in batched], 1e-5)


def test_a_negative_length_penalty_favours_the_shorter_hypotheses():
    """Each prompt's favourite first token stops it: below 0 the one-token hypotheses win."""
    gen = generator(TINY)
    stops = {row[0].tokens[0] for row in search(gen, PROMPTS, 8, BeamParams(5))}
    lengths = {}
    for penalty in (-2.0, 2.0):
        results = search(gen, PROMPTS, 8, BeamParams(5, penalty), stop_tokens=stops)
        lengths[penalty] = [len(row[0].tokens) for row in results]
    assert lengths[-2.0] == [0, 0, 0] and min(lengths[2.0]) > 0


def test_repeat_rules_apply_to_every_beam():
    gen = generator(TINY)
    banned = search(gen, PROMPTS, 8, BeamParams(4, num_return=4, no_repeat_ngram_size=1))
    for prompt, hypotheses in zip(PROMPTS, banned, strict=True):
        for h in hypotheses:
            assert len(set(h.tokens)) == len(h.tokens) and not set(h.tokens) & set(prompt)
    free = search(gen, PROMPTS, 8, BeamParams(4))
    penalized = search(gen, PROMPTS, 8, BeamParams(4, repetition_penalty=3.0))
    assert free != penalized


def test_the_candidates_kept_per_step_follow_hugging_face():
    assert candidates_kept(4, 0, 50257) == 8  # no stop token (a character-level model)
    assert candidates_kept(4, 1, 50257) == 8  # <|endoftext|>: max(2, 1 + 1) * num_beams
    assert candidates_kept(4, 3, 50257) == 16
    assert candidates_kept(4, 200, 50257) == 20  # stop tokens beyond num_beams are not counted
    assert candidates_kept(4, 200, 4) == 16  # no more than the beams' continuations


def test_a_search_may_stop_on_almost_every_token():
    """More candidates than the beams' continuations would be kept; only those that exist are."""
    gen = generator(SMALL_VOCAB)
    [[best]] = search(gen, [[1]], 4, BeamParams(3), stop_tokens={0, 1, 2, 3})
    assert best.tokens in ([], [4], [4, 4], [4, 4, 4], [4, 4, 4, 4])


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"num_beams": 0}, "num_beams must be an integer >= 1, got 0"),
        ({"num_beams": 2.5}, "num_beams must be an integer >= 1, got 2.5"),
        ({"num_beams": 4, "num_return": 5}, "1 to num_beams (4) hypotheses per prompt, 5"),
        ({"num_beams": 4, "length_penalty": float("nan")}, "length_penalty must be a finite"),
        ({"num_beams": 4, "repetition_penalty": 0.0}, "repetition_penalty must be a finite"),
        ({"num_beams": 4, "no_repeat_ngram_size": -1}, "no_repeat_ngram_size must be an integer"),
    ],
)
def test_bad_settings_fail_with_one_sentence(settings, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        BeamParams(**settings)


def test_bad_requests_fail_before_searching():
    gen = generator(SMALL_VOCAB)
    with pytest.raises(ValueError, match="stop_tokens holds 9"):
        search(gen, [[1]], 2, BeamParams(2), stop_tokens={9})
    with pytest.raises(ValueError, match="the model's context is 64 tokens"):
        search(gen, [[1] * 60], 5, BeamParams(2))


def test_the_search_program_read_back_from_the_cache_finds_the_same_hypotheses(tmp_path):
    """What a warm `gpt2 generate --num-beams` runs: the program exported by an earlier process."""
    gen = generator(TINY)
    traced = search(gen, PROMPTS, 6, BeamParams(3, num_return=3))
    try:
        program_cache.enable(tmp_path)
        exported = search(gen, PROMPTS, 6, BeamParams(3, num_return=3))
        program_cache.enable(tmp_path)  # a new process: nothing in memory, the file on disk
        read_back = search(gen, PROMPTS, 6, BeamParams(3, num_return=3))
    finally:
        program_cache.disable()
    assert [f.name.split("-")[0] for f in tmp_path.iterdir()] == ["_search"]
    assert exported == traced and read_back == traced


@pytest.mark.parametrize(
    ("max_len", "index"), [(128, 1), (128, 64), (128, 70), (128, 128), (40, 13)]
)
def test_reordering_the_cache_moves_every_filled_slot_as_taking_rows_does(max_len, index):
    """A search step's cache copy (`reorder_rows`) stops after the chunk holding the last filled
    slot; the filled slots must come out exactly as a full copy's, repeated rows included."""
    config = GPT2Config(n_embd=8, n_head=2, n_layer=2, n_vocab=10, n_ctx=128)
    cache = kv_cache.init_cache(config, 3, max_len, jnp.float32)
    keys = jax.random.split(jax.random.PRNGKey(0), 4)
    shape = cache.k[0].shape
    cache = cache._replace(
        k=(jax.random.normal(keys[0], shape), jax.random.normal(keys[1], shape)),
        v=(jax.random.normal(keys[2], shape), jax.random.normal(keys[3], shape)),
        mask=jnp.arange(3 * max_len).reshape(3, max_len) % 5 > 0,
        index=jnp.int32(index),
    )
    rows = jnp.asarray([2, 2, 0])
    full, reordered = kv_cache.take_rows(cache, rows), jax.jit(kv_cache.reorder_rows)(cache, rows)
    chunk = math.gcd(max_len, kv_cache.REORDER_CHUNK)
    copied = -(-index // chunk) * chunk  # the slots of the chunks holding filled ones
    layers = zip(reordered.k + reordered.v, full.k + full.v, cache.k + cache.v, strict=True)
    for got, expected, before in layers:
        np.testing.assert_array_equal(got[:, :index], expected[:, :index])
        np.testing.assert_array_equal(got[:, copied:], before[:, copied:])
    np.testing.assert_array_equal(reordered.mask, full.mask)
