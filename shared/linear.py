"""The position-wise linear layer every backend shares: all token positions as one 2-D product.

A [batch, seq, in] @ [in, out] product differentiates into weight gradients that contract two axes
(batch and seq) at once. XLA:CPU writes a transposed copy of the output gradient for each of them,
and fuses into that copy the whole residual-stream gradient sum of the layers above, so the sum is
recomputed once per layer: a cost quadratic in depth. Flattening the positions to rows first makes
each weight gradient a plain [rows, in]^T @ [rows, out] product, and the sum is computed once.
Training steps on CPU get shorter; forward passes are unchanged.

A LoRA fine-tuning multiplies by an `AdaptedWeight`: the frozen weight and its low-rank factors,
kept apart so that the factors' gradients are low-rank products too.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax

from shared.quantization import Weight, matmul


@dataclasses.dataclass(frozen=True)
class AdaptedWeight:
    """A frozen weight `w` [..., in, out] with its LoRA factors `a` [..., in, rank] and `b`
    [..., rank, out], standing for `shared.lora.merged_weight` of them.

    `linear` multiplies rows by it as rows @ w + scale * (rows @ a) @ b: the merged weight's
    product up to rounding, but differentiated by the factors it needs only low-rank products,
    where the merged weight's gradient is a full [in, out] product reduced to the factors after.
    A pytree whose leaves are the three arrays (`lax.scan` slices their layer axis).
    """

    w: Any
    a: Any
    b: Any
    scale: float = dataclasses.field(metadata={"static": True})

    @property
    def shape(self) -> tuple[int, ...]:
        """The weight's shape (Haiku checks a fetched parameter's)."""
        return tuple(self.w.shape)

    @property
    def dtype(self) -> Any:
        return self.w.dtype

    def __getitem__(self, index: int) -> AdaptedWeight:
        """Layer `index` of a stacked weight and its stacked factors."""
        return AdaptedWeight(self.w[index], self.a[index], self.b[index], self.scale)


jax.tree_util.register_dataclass(AdaptedWeight)


def over_rows(apply: Callable[[jax.Array], jax.Array], x: jax.Array) -> jax.Array:
    """Run `apply`, a map of rows [n, in] -> [n, out], on x [..., in] as one [n, in] matrix."""
    rows = apply(x.reshape(-1, x.shape[-1]))
    return rows.reshape(*x.shape[:-1], rows.shape[-1])


def linear(x: jax.Array, w: Weight | AdaptedWeight, b: jax.Array) -> jax.Array:
    """[..., in] @ [in, out] + [out], computed over rows (see the module docstring); `w` may be
    int8 with scales (`shared.quantization`) or adapted by LoRA factors (`AdaptedWeight`)."""
    return over_rows(lambda rows: product(rows, w) + b, x)


def product(rows: jax.Array, w: Weight | AdaptedWeight) -> jax.Array:
    """rows [n, in] @ w [in, out], an adapted weight's factors in the rows' dtype."""
    if isinstance(w, AdaptedWeight):
        low_rank = (rows @ w.a.astype(rows.dtype)) @ w.b.astype(rows.dtype)
        return matmul(rows, w.w) + w.scale * low_rank
    return matmul(rows, w)
