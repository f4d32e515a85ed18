"""Training-mode dropout that every backend applies identically, at GPT-2's four places.

GPT-2 (and nanoGPT) drop out the embeddings (after wte + wpe), the attention probabilities, and the
residual branches after the attention's and the MLP's output projections. Each place of each block
gets its own mask from the forward pass's key by `jax.random.fold_in`, so one key gives the very
same masks in every backend, and the conformance suite can compare them with dropout on.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

EMBEDDINGS, ATTENTION, ATTENTION_OUTPUT, MLP_OUTPUT = range(4)
"""The places dropout is applied at; each is folded into the key of the block it belongs to."""


@functools.partial(jax.tree_util.register_dataclass, data_fields=["key"], meta_fields=["rate"])
@dataclasses.dataclass(frozen=True)
class Dropout:
    """The dropout of one training forward pass: a rate in [0, 1) and the PRNG key of its masks.

    A pytree whose rate is static, so a rate of 0 compiles to the plain forward. Backends take
    `dropout: Dropout | None`; None (inference, evaluation, generation) applies no dropout.
    """

    rate: float
    key: jax.Array

    def block(self, layer: int | jax.Array) -> Dropout:
        """The dropout of block `layer` (a Python or traced int): its own key, the same rate."""
        return Dropout(self.rate, jax.random.fold_in(self.key, layer + 1))


def drop(x: jax.Array, dropout: Dropout | None, place: int) -> jax.Array:
    """x with each element zeroed with probability `dropout.rate`, the rest scaled by 1/(1-rate).

    The mask is drawn from `fold_in(dropout.key, place)` with x's shape, so it depends only on the
    key, the place and the shape. Without dropout (None or rate 0) x is returned unchanged.
    """
    if dropout is None or dropout.rate == 0:
        return x
    keep = jax.random.bernoulli(jax.random.fold_in(dropout.key, place), 1 - dropout.rate, x.shape)
    return jnp.where(keep, x / (1 - dropout.rate), jnp.zeros_like(x)).astype(x.dtype)
