"""Every backend's cached decode equals its own full forward pass, and batching changes nothing."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conformance.conftest import TINY
from shared.generation import Generator, row_keys
from shared.sampling import SamplingParams


def _tokens(config, batch, length, seed=1):
    return jax.random.randint(jax.random.PRNGKey(seed), (batch, length), 0, config.n_vocab)


def test_kv_cache_decode_equals_full_forward_at_every_step(backend, config):
    params = backend.init(config, jax.random.PRNGKey(0))
    tokens = _tokens(config, 2, 12)
    positions = jnp.broadcast_to(jnp.arange(12), tokens.shape)
    apply = jax.jit(backend.apply, static_argnames="config")
    full, _ = apply(params, tokens, positions, None, config=config)
    cache = backend.init_cache(config, 2, 16, jnp.float32)
    logits, cache = apply(params, tokens[:, :4], positions[:, :4], cache, config=config)
    steps = [logits]
    for t in range(4, 12):
        logits, cache = apply(
            params, tokens[:, t : t + 1], positions[:, t : t + 1], cache, config=config
        )
        steps.append(logits)
    np.testing.assert_allclose(jnp.concatenate(steps, axis=1), full, atol=1e-5, rtol=0)
    assert int(cache.index) == 12


PROMPTS = [[5, 6, 7], [11, 12, 13, 14, 15, 16, 17, 18, 19], [42]]


@pytest.mark.parametrize(
    "sampling",
    [SamplingParams(0.0), SamplingParams(1.0, top_k=20), SamplingParams(0.8, top_p=0.9)],
    ids=["greedy", "top_k", "top_p"],
)
def test_left_padded_batch_rows_equal_prompts_generated_alone(backend, tiny_params, sampling):
    generator = Generator(backend, tiny_params, TINY)
    keys = row_keys(7, len(PROMPTS))
    batched = generator.generate(PROMPTS, 12, sampling, keys=keys)
    for row, prompt in enumerate(PROMPTS):
        alone = generator.generate([prompt], 12, sampling, keys=keys[row : row + 1])
        assert alone[0].tokens == batched[row].tokens


def test_greedy_generation_follows_the_full_forward_argmax(backend, tiny_params):
    generator = Generator(backend, tiny_params, TINY)
    [completion] = generator.generate([PROMPTS[1]], 6)
    sequence = list(PROMPTS[1])
    for _ in range(6):
        tokens = jnp.asarray([sequence])
        logits, _ = backend.apply(
            tiny_params, tokens, jnp.arange(len(sequence))[None], None, config=TINY
        )
        sequence.append(int(jnp.argmax(logits[0, -1])))
    assert completion.tokens == sequence[len(PROMPTS[1]) :]


def test_stop_token_ends_only_its_own_row(backend, tiny_params):
    generator = Generator(backend, tiny_params, TINY)
    free = generator.generate(PROMPTS, 10)
    stop = free[0].tokens[3]
    stopped = generator.generate(PROMPTS, 10, stop_tokens={stop})
    first = free[0].tokens.index(stop)
    assert stopped[0].tokens == free[0].tokens[:first]
    assert stopped[0].finish_reason == "stop"
    for row in (1, 2):
        if stop not in free[row].tokens:
            assert stopped[row].tokens == free[row].tokens
            assert stopped[row].finish_reason == "length"


def test_streaming_in_chunks_yields_the_same_tokens(backend, tiny_params):
    generator = Generator(backend, tiny_params, TINY)
    whole = generator.generate(PROMPTS, 11, SamplingParams(1.0), seed=3)
    rows = [[] for _ in PROMPTS]
    for new, _ in generator.stream(PROMPTS, 11, SamplingParams(1.0), seed=3, chunk=4):
        for row, ids in zip(rows, new, strict=True):
            row.extend(ids)
    assert rows == [c.tokens for c in whole]
