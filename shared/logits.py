"""The output layer every backend shares: next-token logits from the tied token embedding."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def tied_logits(hidden: jax.Array, wte: jax.Array) -> jax.Array:
    """hidden [..., n_embd] -> logits [..., n_vocab], i.e. hidden @ wte.T.

    Spelled as wte @ hidden: for one row (batch-1 decoding) XLA:CPU turns `hidden @ wte.T` into a
    loop that transposes wte element by element (about 1.4x slower); this form is its
    matrix-vector kernel. Other shapes compile to the same product either way.
    """
    return jnp.einsum("vd,...d->...v", wte, hidden)


def last_position(hidden: jax.Array, last_only: bool) -> jax.Array:
    """hidden [batch, seq, n_embd], cut to [batch, 1, n_embd] when only the last logits are needed.

    Sampling after a prompt needs one position's logits; projecting all of them onto the 50,257
    tokens was about a quarter of a 1024-token prefill.
    """
    return hidden[:, -1:] if last_only else hidden
