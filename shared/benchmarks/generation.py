"""Measurements behind `gpt2 bench`: generation speed against baselines run in the same process.

Warm-up (compilation) is always excluded from throughput and reported on its own.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from shared.backend import Backend, get_backend
from shared.config import GPT2Config, config_for_size
from shared.generation import GREEDY, Generator, slot_bucket
from shared.params import cast
from shared.sampling import SamplingParams


@dataclasses.dataclass
class Result:
    name: str
    value: float
    unit: str
    note: str = ""


def random_model(
    size: str, backend_name: str, seed: int = 0, dtype: str = "float32"
) -> tuple[Backend, Any, GPT2Config]:
    """A backend's parameters for `size` with GPT-2's random initialisation (no download)."""
    backend, config = get_backend(backend_name), config_for_size(size)
    tree = jax.jit(functools.partial(backend.init, config))(jax.random.PRNGKey(seed))
    if dtype != "float32":
        tree = backend.from_canonical(
            cast(backend.to_canonical(tree, config), jnp.dtype(dtype)), config
        )
    return backend, tree, config


def _prompts(batch: int, length: int, config: GPT2Config) -> list[list[int]]:
    rng = np.random.default_rng(0)
    return rng.integers(0, config.n_vocab, size=(batch, length)).tolist()


def _timed(fn: Any) -> float:
    start = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - start


def time_to_first_token(generator: Generator, prompt_len: int) -> tuple[float, float]:
    """(cold, warm) seconds from call to the first generated token; cold includes compilation."""
    prompts = _prompts(1, prompt_len, generator.config)
    jax.clear_caches()
    cold = _timed(lambda: next(generator.stream(prompts, 1)))
    warm = _timed(lambda: next(generator.stream(prompts, 1)))
    return cold, warm


def cached_decode_tokens_per_s(
    generator: Generator,
    batch: int,
    prompt_len: int,
    new_tokens: int,
    sampling: SamplingParams = GREEDY,
    repeats: int = 2,
) -> float:
    """Generated tokens per second (all rows), best of `repeats` after one warm-up run."""
    prompts = _prompts(batch, prompt_len, generator.config)

    def run() -> list:
        return generator.generate(prompts, new_tokens, sampling)

    run()
    return batch * new_tokens / min(_timed(run) for _ in range(repeats))


def recompute_tokens_per_s(
    backend: Backend, params: Any, config: GPT2Config, prompt_len: int, new_tokens: int
) -> float:
    """The seed's loop: each new token runs the whole sequence through the model again (no cache).

    The sequence is padded to the same 64-slot buckets generation uses so the baseline is not
    charged for recompiling at every length; compilation is done before timing.
    """

    @jax.jit
    def next_token(tokens: jax.Array, length: jax.Array) -> jax.Array:
        positions = jnp.arange(tokens.shape[1])[None, :]
        logits, _ = backend.apply(params, tokens, positions, None, config=config)
        return jnp.argmax(logits[0, length - 1])

    total = prompt_len + new_tokens
    for bucket in range(slot_bucket(prompt_len + 1), slot_bucket(total) + 1, 64):
        next_token(jnp.zeros((1, bucket), jnp.int32), jnp.int32(1)).block_until_ready()
    tokens = np.zeros(slot_bucket(total), np.int32)
    tokens[:prompt_len] = _prompts(1, prompt_len, config)[0]
    start = time.perf_counter()
    for length in range(prompt_len, total):
        width = slot_bucket(length + 1)
        token = next_token(jnp.asarray(tokens[None, :width]), jnp.int32(length))
        tokens[length] = int(token)
    return new_tokens / (time.perf_counter() - start)


def generation_report(
    size: str = "124M",
    backend_name: str = "functional",
    prompt_len: int = 32,
    new_tokens: int = 256,
    dtype: str = "float32",
    baseline: bool = True,
) -> list[Result]:
    """Batch-1 greedy decode vs the recompute loop, and time to first token, on random weights."""
    backend, params, config = random_model(size, backend_name, dtype=dtype)
    generator = Generator(backend, params, config)
    cold, warm = time_to_first_token(generator, prompt_len)
    cached = cached_decode_tokens_per_s(generator, 1, prompt_len, new_tokens)
    results = [
        Result("time to first token, cold (compile included)", cold, "s"),
        Result("time to first token, warm", warm, "s"),
        Result("cached decode, batch 1, greedy", cached, "tokens/s"),
    ]
    if baseline:
        recompute = recompute_tokens_per_s(backend, params, config, prompt_len, new_tokens)
        results += [
            Result("recompute-everything loop (seed), batch 1", recompute, "tokens/s"),
            Result("cached decode / recompute loop", cached / recompute, "x"),
        ]
    return results


def markdown_table(results: list[Result], title: str) -> str:
    lines = [f"**{title}**", "", "| measure | value | unit |", "| --- | ---: | --- |"]
    lines += [f"| {r.name} | {r.value:,.3g} | {r.unit} |" for r in results]
    return "\n".join(lines)
