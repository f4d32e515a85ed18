"""A decode step's attention as one Pallas kernel: one new query token per row against the layer's
KV cache, flash-decoding style.

`shared.attention.attend` writes each row's scores and probabilities [n_k] to memory between its
two products, over every slot of the cache. This kernel reads each block of cache slots once and
keeps only a running maximum, a running sum of exponentials and a running weighted sum of values
(fp32), rescaling them whenever the maximum grows, so the score row never leaves the chip; and it
reads no block past the last filled slot.

It is written for Pallas' Triton backend on a CUDA GPU: one program per (sequence, head) row,
power-of-two blocks of `BLOCK_SLOTS` slots by head_dim (64 in every GPT-2 size; it must be a
power of two on GPU), products as elementwise multiply-and-sum (a single query is too small for
the tensor cores). Elsewhere it runs in Pallas' interpret mode, slowly but as the same
computation, so CPU tests check its correctness. `shared.attention.pallas_decode_attention`
switches it on.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as pltriton

from shared.kv_cache import from_head_rows, head_rows

BLOCK_SLOTS = 64
"""Cache slots one loop step reads (fewer in a cache shorter than this): a power of two, and
`generation.SLOT_BUCKET`, so the generator's caches split into whole blocks."""


def decode_attention(
    q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array, filled: jax.Array | int | None = None
) -> jax.Array:
    """`attention.attend`'s attended values for one query token per sequence, by the kernel.

    q: [batch, 1, n_head, head_dim]; k, v: [batch * n_head, n_k, head_dim] (`kv_cache.head_rows`);
    mask: broadcastable to [batch, 1, 1, n_k], True where a key may be seen (`attention_mask`: the
    same for every head), at least one key per sequence. filled: the slots [0, filled) that may
    hold a visible key; the kernel reads no block past them. None: all n_k.
    Returns [batch, 1, n_head, head_dim] in v's dtype.

    A cache whose n_k is not a multiple of the block is padded to one (a copy); the generator's
    caches never are.
    """
    batch, n_q, n_head, head_dim = q.shape
    assert n_q == 1, "the decode kernel attends one new token per sequence"
    rows, n_k, _ = k.shape
    block = min(BLOCK_SLOTS, pl.next_power_of_2(n_k))
    mask = jnp.broadcast_to(mask, (batch, 1, 1, n_k)).reshape(batch, n_k).astype(jnp.int32)
    pad = -n_k % block
    if pad:
        k, v = (jnp.pad(x, ((0, 0), (0, pad), (0, 0))) for x in (k, v))
        mask = jnp.pad(mask, ((0, 0), (0, pad)))
    slots = n_k + pad
    filled = jnp.asarray(n_k if filled is None else filled, jnp.int32)
    kernel = functools.partial(_kernel, block=block, scale=head_dim**-0.5)
    heads = pl.pallas_call(
        kernel,
        grid=(rows,),
        in_specs=[
            pl.BlockSpec((), lambda row: ()),
            pl.BlockSpec((None, head_dim), lambda row: (row, 0)),
            pl.BlockSpec((None, slots, head_dim), lambda row: (row, 0, 0)),
            pl.BlockSpec((None, slots, head_dim), lambda row: (row, 0, 0)),
            pl.BlockSpec((None, slots), lambda row: (row // n_head, 0)),
        ],
        out_specs=pl.BlockSpec((None, head_dim), lambda row: (row, 0)),
        out_shape=jax.ShapeDtypeStruct((rows, head_dim), v.dtype),
        compiler_params=pltriton.CompilerParams(num_warps=4, num_stages=2),
        interpret=jax.default_backend() != "gpu",
        name="decode_attention",
    )(filled, head_rows(q)[:, 0], k, v, mask)
    return from_head_rows(heads[:, None], batch)


def _kernel(
    filled_ref: jax.Array,
    q_ref: jax.Array,
    k_ref: jax.Array,
    v_ref: jax.Array,
    mask_ref: jax.Array,
    out_ref: jax.Array,
    *,
    block: int,
    scale: float,
) -> None:
    """One (sequence, head) row: q_ref [head_dim], k_ref and v_ref [slots, head_dim], mask_ref
    [slots] (int32, nonzero where visible), out_ref [head_dim]."""
    q = q_ref[...].astype(jnp.float32)
    lowest = jnp.finfo(jnp.float32).min

    def step(i: jax.Array, carry: tuple[jax.Array, jax.Array, jax.Array]) -> tuple:
        running_max, total, weighted = carry
        window = pl.ds(i * block, block)
        visible = mask_ref[window] != 0
        scores = jnp.sum(k_ref[window, :].astype(jnp.float32) * q[None, :], axis=1) * scale
        scores = jnp.where(visible, scores, lowest)
        new_max = jnp.maximum(running_max, jnp.max(scores))
        rescale = jnp.exp(running_max - new_max)
        weights = jnp.where(visible, jnp.exp(scores - new_max), 0.0)
        values = v_ref[window, :].astype(jnp.float32)
        return (
            new_max,
            total * rescale + jnp.sum(weights),
            weighted * rescale + jnp.sum(weights[:, None] * values, axis=0),
        )

    n_blocks = jnp.minimum(pl.cdiv(filled_ref[()], block), k_ref.shape[0] // block)
    start = (jnp.float32(lowest), jnp.float32(0), jnp.zeros(q.shape, jnp.float32))
    _, total, weighted = jax.lax.fori_loop(0, n_blocks, step, start)
    out_ref[...] = (weighted / total).astype(out_ref.dtype)
