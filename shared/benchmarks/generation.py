"""Generation speed on random weights: decode throughput, time to first token, prefill, and the
seed's recompute-everything loop as the baseline."""

from __future__ import annotations

import functools
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from shared.apply_options import ApplyOptions
from shared.backend import Backend, get_backend
from shared.config import GPT2Config, config_for_size
from shared.generation import GREEDY, Generator, slot_bucket
from shared.jax_types import PyTree
from shared.kv_cache import KVCache
from shared.quantization import weights_in
from shared.sampling import SamplingParams

TOP_P = SamplingParams(temperature=1.0, top_p=0.9)


COMPILED_INIT_BYTES = 2 << 30
"""Models with more float32 weight bytes are initialised op by op: the compiled initialisation is
faster, but holds its random bits and the stacked tree beside its outputs, about three times the
weights' bytes, where op by op the peak is twice them (the stacked and the per-layer copy)."""


def random_model(
    size: str | GPT2Config, backend_name: str, seed: int = 0, dtype: str = "float32"
) -> tuple[Backend, Any, GPT2Config]:
    """A backend's parameters for `size` (a name or a config) with GPT-2's random initialisation
    (no download), in weights `dtype` (float32, bfloat16 or int8)."""
    backend, config = get_backend(backend_name), config_for_size(size)
    init = functools.partial(backend.init, config)
    if 4 * config.n_params > COMPILED_INIT_BYTES:
        tree = init(jax.random.PRNGKey(seed))
    else:
        tree = jax.jit(init)(jax.random.PRNGKey(seed))
    return backend, weights_dtype(backend, tree, config, dtype), config


def weights_dtype(backend: Backend, params: PyTree, config: GPT2Config, dtype: str) -> PyTree:
    """float32 `params` with their weights in `dtype` (`shared.quantization.weights_in`), so a
    comparison of dtypes initialises a large model once."""
    if dtype == "float32":
        return params
    return backend.from_canonical(weights_in(backend.to_canonical(params, config), dtype), config)


def parameter_bytes(params: PyTree) -> int:
    return sum(x.nbytes for x in jax.tree.leaves(params))


def random_prompts(batch: int, length: int, config: GPT2Config) -> list[list[int]]:
    rng = np.random.default_rng(0)
    return rng.integers(0, config.n_vocab, size=(batch, length)).tolist()


def full_forward_logits(
    backend: Backend, params: PyTree, config: GPT2Config, tokens: np.ndarray
) -> np.ndarray:
    """fp32 logits [batch, seq, vocab] of the training forward pass (no cache)."""
    positions = np.broadcast_to(np.arange(tokens.shape[1]), tokens.shape)
    forward = jax.jit(functools.partial(backend.apply, cache=None, config=config))
    logits, _ = forward(params, tokens, positions)
    return np.asarray(logits, np.float32)


def _timed(fn: Any) -> float:
    start = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - start


def time_to_first_token(generator: Generator, prompt_len: int) -> tuple[float, float]:
    """(cold, warm) seconds from call to the first generated token; cold includes compilation."""
    prompts = random_prompts(1, prompt_len, generator.config)
    jax.clear_caches()
    cold = _timed(lambda: next(generator.stream(prompts, 1)))
    warm = min(_timed(lambda: next(generator.stream(prompts, 1))) for _ in range(3))
    return cold, warm


def decode_tokens_per_s(
    generator: Generator,
    batch: int,
    prompt_len: int,
    new_tokens: int,
    sampling: SamplingParams = GREEDY,
    repeats: int = 3,
) -> tuple[float, float]:
    """(generated tokens/s over all rows, best of `repeats`; seconds of the compiling first run)."""
    prompts = random_prompts(batch, prompt_len, generator.config)

    def run() -> list:
        return generator.generate(prompts, new_tokens, sampling)

    compile_seconds = _timed(run)
    return batch * new_tokens / min(_timed(run) for _ in range(repeats)), compile_seconds


def prefill_tokens_per_s(
    backend: Backend, params: PyTree, config: GPT2Config, prompt_len: int, repeats: int = 3
) -> float:
    """Prompt tokens/s of one forward pass that fills the KV cache (batch 1)."""
    dtype = jax.tree.leaves(params)[0].dtype

    @jax.jit
    def prefill(params: PyTree, tokens: jax.Array) -> tuple[jax.Array, KVCache | None]:
        cache = backend.init_cache(config, 1, prompt_len, dtype)
        positions = jnp.arange(prompt_len)[None, :]
        logits, cache = backend.apply(
            params, tokens, positions, cache, config=config, options=ApplyOptions(last_only=True)
        )
        return logits[:, -1], cache

    tokens = jnp.asarray(random_prompts(1, prompt_len, config), jnp.int32)
    jax.block_until_ready(prefill(params, tokens))
    return prompt_len / min(_timed(lambda: prefill(params, tokens)) for _ in range(repeats))


def recompute_tokens_per_s(
    backend: Backend, params: PyTree, config: GPT2Config, prompt_len: int, new_tokens: int
) -> float:
    """The seed's loop: each new token runs the whole sequence through the model again (no cache).

    The sequence is padded to the same 64-slot buckets generation uses (at most the context) so
    the baseline is not charged for recompiling at every length; compilation is done before timing.
    """

    def width(length: int) -> int:
        return min(slot_bucket(length), config.n_ctx)

    @jax.jit
    def next_token(tokens: jax.Array, length: jax.Array) -> jax.Array:
        positions = jnp.arange(tokens.shape[1])[None, :]
        logits, _ = backend.apply(params, tokens, positions, None, config=config)
        return jnp.argmax(logits[0, length - 1])

    total = prompt_len + new_tokens
    for bucket in sorted({width(length + 1) for length in range(prompt_len, total)}):
        next_token(jnp.zeros((1, bucket), jnp.int32), jnp.int32(1)).block_until_ready()
    tokens = np.zeros(width(total), np.int32)
    tokens[:prompt_len] = random_prompts(1, prompt_len, config)[0]
    start = time.perf_counter()
    for length in range(prompt_len, total):
        token = next_token(jnp.asarray(tokens[None, : width(length + 1)]), jnp.int32(length))
        tokens[length] = int(token)
    return new_tokens / (time.perf_counter() - start)
