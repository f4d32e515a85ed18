"""Pure, jittable next-token sampling: temperature (0 = greedy), top-k, top-p, composable.

The settings are traced values, not static ones, so changing them never recompiles. Each row draws
with its own PRNG key, so a row's tokens do not depend on which other rows share its batch.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class SamplingParams:
    """How to pick the next token.

    temperature: 0 picks the most likely token (greedy); higher flattens the distribution.
    top_k: keep only the k most likely tokens (None = all).
    top_p: keep the smallest set of most likely tokens whose probability reaches top_p (1 = all).
    """

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float = 1.0

    def __post_init__(self) -> None:
        if not (isinstance(self.temperature, int | float) and math.isfinite(self.temperature)) or (
            self.temperature < 0
        ):
            raise ValueError(
                f"temperature must be a finite number >= 0 (0 = greedy), got {self.temperature!r}."
            )
        if self.top_k is not None and (
            not isinstance(self.top_k, int) or isinstance(self.top_k, bool) or self.top_k < 1
        ):
            raise ValueError(f"top_k must be an integer >= 1 (or unset), got {self.top_k!r}.")
        if not (isinstance(self.top_p, int | float) and 0 < self.top_p <= 1):
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p!r}.")

    def as_arrays(self) -> tuple[jax.Array, jax.Array, jax.Array]:
        """(temperature, top_k with 0 meaning off, top_p) as traced scalars."""
        return (
            jnp.float32(self.temperature),
            jnp.int32(self.top_k or 0),
            jnp.float32(self.top_p),
        )


def filter_logits(logits: jax.Array, top_k: jax.Array, top_p: jax.Array) -> jax.Array:
    """Set to -inf every logit outside the top-k and then the top-p set. logits: [batch, vocab].

    Ties at the threshold are kept, so with equal logits the set can exceed k.
    """
    vocab = logits.shape[-1]
    ranked = -jnp.sort(-logits, axis=-1)
    rank = jnp.arange(vocab)
    k = jnp.where(top_k > 0, jnp.minimum(top_k, vocab), vocab)
    ranked = jnp.where(rank < k, ranked, -jnp.inf)
    probs = jax.nn.softmax(ranked, axis=-1)
    mass_before = jnp.cumsum(probs, axis=-1) - probs
    n_keep = jnp.sum((mass_before < top_p) & (rank < k), axis=-1)
    threshold = jnp.take_along_axis(ranked, (n_keep - 1)[:, None], axis=-1)
    return jnp.where(logits >= threshold, logits, -jnp.inf)


def sample(
    logits: jax.Array,
    keys: jax.Array,
    temperature: jax.Array,
    top_k: jax.Array,
    top_p: jax.Array,
) -> jax.Array:
    """One token id per row. logits: [batch, vocab]; keys: [batch] PRNG keys (one per row)."""
    logits = logits.astype(jnp.float32)

    def draw(logits: jax.Array) -> jax.Array:
        scaled = logits / temperature
        filtered = jax.lax.cond(
            (top_k > 0) | (top_p < 1),
            lambda x: filter_logits(x, top_k, top_p),
            lambda x: x,
            scaled,
        )
        return jax.vmap(jax.random.categorical)(keys, filtered)

    def greedy(logits: jax.Array) -> jax.Array:
        return jnp.argmax(logits, axis=-1)

    return jax.lax.cond(temperature > 0, draw, greedy, logits).astype(jnp.int32)
