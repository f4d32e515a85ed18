"""Left padding across prompt buckets: a batch pads each prompt to the bucket of its longest, so a
short prompt batched with a long one gets many more padding slots than it gets alone. Each row must
still equal its prompt run alone, in the logits of the first generated positions and in greedy ids:
positions that ignore the padding, or attention that lets a padding slot through, break that.

The weights are `lively_tree`'s, whose attention and logits are far from flat, so such a mistake
shows in the logits rather than hiding under rounding."""

from __future__ import annotations

import functools
from typing import cast

import jax
import jax.numpy as jnp
import numpy as np

from conformance.conftest import TINY, lively_tree
from conformance.report import max_abs_diff
from shared.backend import Backend
from shared.config import GPT2Config
from shared.generation import Generator, left_pad, prefill, prompt_bucket, slot_bucket
from shared.jax_types import PyTree

PROMPTS = [
    np.random.default_rng(length).integers(0, TINY.n_vocab, length).tolist()
    for length in (20, 1, 16, 7)
]
"""Buckets 32, 16, 16 and 16: batched, the one-token prompt gets 31 padding slots (15 alone) and
the 16-token prompt 16 (none alone)."""
NEW_TOKENS = 8
TOLERANCE = 1e-5
CHECK = "left-padded batch across buckets (lively weights)"


@functools.partial(jax.jit, static_argnames=("backend", "config", "steps"))
def first_logits(
    params: PyTree,
    prompt: jax.Array,
    mask: jax.Array,
    *,
    backend: Backend,
    config: GPT2Config,
    steps: int,
) -> jax.Array:
    """[batch, steps, n_vocab]: the logits of the first `steps` greedy positions after the
    left-padded prompts, through the generation driver's `prefill`, then one cached
    single-token step per position as its decode loop takes them."""
    max_slots = slot_bucket(prompt.shape[1] + steps)
    logits, cache, position = prefill(params, prompt, mask, backend, config, max_slots)

    def step(carry, _):
        logits, cache, position = carry
        token = jnp.argmax(logits, axis=-1)[:, None]
        logits, cache = backend.apply(params, token, position[:, None] + 1, cache, config=config)
        return (logits[:, 0], cache, position + 1), logits[:, 0]

    _, later = jax.lax.scan(step, (logits, cache, position), length=steps - 1)
    return jnp.concatenate([logits[:, None], later.swapaxes(0, 1)], axis=1)


def padded_first_logits(backend: Backend, params: PyTree, prompts: list[list[int]]) -> jax.Array:
    """`first_logits` of `prompts` left-padded as the generation driver pads them."""
    padded, mask = left_pad(prompts, TINY.n_ctx)
    return first_logits(params, padded, mask, backend=backend, config=TINY, steps=NEW_TOKENS)


@functools.cache
def batched_and_alone(backend: Backend) -> tuple[jax.Array, jax.Array]:
    """`padded_first_logits` of PROMPTS as one batch, and of each prompt alone (stacked), with
    `lively_tree`'s weights; kept for the checks of ids and of logits."""
    params = backend.from_canonical(lively_tree(TINY), TINY)
    alone = [padded_first_logits(backend, params, [prompt]) for prompt in PROMPTS]
    return padded_first_logits(backend, params, PROMPTS), jnp.concatenate(alone)


def test_the_prompts_span_several_padding_buckets():
    buckets = [prompt_bucket(len(prompt)) for prompt in PROMPTS]
    assert len(set(buckets)) > 1 and max(buckets) + NEW_TOKENS <= TINY.n_ctx


def test_rows_across_buckets_give_the_logits_of_each_prompt_alone(backend, report):
    batched, alone = batched_and_alone(backend)
    assert batched.shape == (len(PROMPTS), NEW_TOKENS, TINY.n_vocab)
    report.check(f"{CHECK}: first logits vs each prompt alone", backend.name, "tiny",
                 max_abs_diff(batched, alone), TOLERANCE)  # fmt: skip


def test_rows_across_buckets_generate_the_greedy_ids_of_each_prompt_alone(backend, report):
    """`Generator.generate` on the batch, against each prompt's greedy ids alone: the argmax
    of its first logits, which the check above holds to the batch's."""
    generator = Generator(backend, backend.from_canonical(lively_tree(TINY), TINY), TINY)
    batched = [c.tokens for c in generator.generate(PROMPTS, NEW_TOKENS)]
    alone = np.argmax(batched_and_alone(backend)[1], axis=-1)
    assert alone.shape == (len(PROMPTS), NEW_TOKENS)
    differing = int(np.sum(np.array(batched) != alone))
    report.check(f"{CHECK}: greedy ids vs each prompt alone", backend.name, "tiny", differing,
                 0)  # fmt: skip


class _SeesPadding:
    """A backend whose attention sees the left-padding slots: its `apply` drops the cache mask."""

    def __init__(self, inner: Backend) -> None:
        self.inner, self.name = inner, f"sees-padding-{inner.name}"

    def init_cache(self, *args, **kwargs):
        return self.inner.init_cache(*args, **kwargs)

    def apply(self, params, tokens, positions, cache, **kwargs):
        if cache is not None:
            cache = cache._replace(mask=jnp.ones_like(cache.mask))
        return self.inner.apply(params, tokens, positions, cache, **kwargs)


def test_the_logits_check_catches_attention_that_sees_padding(reference):
    """The one-token prompt's row, batched (31 padding slots) and alone (15): with attention
    let through to the padding, its logits move by far more than the tolerance. (A batch of one
    bucket would not show it: each row is padded there as it is alone.)"""
    backend = cast(Backend, _SeesPadding(reference))
    params = reference.from_canonical(lively_tree(TINY), TINY)
    batched = padded_first_logits(backend, params, PROMPTS)[1]
    alone = padded_first_logits(backend, params, [PROMPTS[1]])[0]
    assert max_abs_diff(batched, alone) > 1000 * TOLERANCE
