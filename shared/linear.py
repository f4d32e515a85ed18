"""The position-wise linear layer every backend shares: all token positions as one 2-D product.

A [batch, seq, in] @ [in, out] product differentiates into weight gradients that contract two axes
(batch and seq) at once. XLA:CPU writes a transposed copy of the output gradient for each of them,
and fuses into that copy the whole residual-stream gradient sum of the layers above, so the sum is
recomputed once per layer: a cost quadratic in depth. Flattening the positions to rows first makes
each weight gradient a plain [rows, in]^T @ [rows, out] product, and the sum is computed once.
Training steps on CPU get shorter; forward passes are unchanged.
"""

from __future__ import annotations

from collections.abc import Callable

import jax

from shared.quantization import Weight, matmul


def over_rows(apply: Callable[[jax.Array], jax.Array], x: jax.Array) -> jax.Array:
    """Run `apply`, a map of rows [n, in] -> [n, out], on x [..., in] as one [n, in] matrix."""
    rows = apply(x.reshape(-1, x.shape[-1]))
    return rows.reshape(*x.shape[:-1], rows.shape[-1])


def linear(x: jax.Array, w: Weight, b: jax.Array) -> jax.Array:
    """[..., in] @ [in, out] + [out], computed over rows (see the module docstring); `w` may be
    int8 with scales (`shared.quantization`)."""
    return over_rows(lambda rows: matmul(rows, w) + b, x)
