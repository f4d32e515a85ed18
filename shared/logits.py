"""The output layer every backend shares: next-token logits from the tied token embedding."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

from shared.apply_options import ApplyOptions
from shared.linear import over_rows
from shared.quantization import QuantizedWeight, Weight


def tied_logits(hidden: jax.Array, wte: Weight) -> jax.Array:
    """hidden [..., n_embd] -> logits [..., n_vocab], i.e. hidden @ wte.T.

    Spelled as wte @ hidden so that XLA:CPU runs one row (batch-1 decoding) through its
    matrix-vector kernel rather than a loop fused with a transposed wte, the faster of the two for
    the product alone. Inside the decode loop the two forms measured the same, and training steps
    too; one definition keeps the three backends' logits identical. The positions are projected
    as rows (`shared.linear.over_rows`) so the tied embedding's gradient is one 2-D product, which
    shortened the 124M training step on CPU. An int8 `wte` (`shared.quantization`) has one scale
    per vocabulary row, which is one per logit.
    """
    if isinstance(wte, QuantizedWeight):
        return tied_logits(hidden, wte.values.astype(hidden.dtype)) * wte.scale[:, 0]
    return over_rows(lambda rows: jnp.einsum("vd,nd->nv", wte, rows), hidden)


def last_position(hidden: jax.Array, last_only: bool) -> jax.Array:
    """hidden [batch, seq, n_embd], cut to [batch, 1, n_embd] when only the last logits are needed.

    Sampling after a prompt needs one position's logits; projecting all of them onto the 50,257
    tokens was a large share of a long prefill.
    """
    return hidden[:, -1:] if last_only else hidden


def model_output(
    options: ApplyOptions,
    block_inputs: Sequence[jax.Array] | jax.Array | None,
    probabilities: Sequence[jax.Array] | jax.Array | None,
    x: jax.Array,
    ln_f: Callable[[jax.Array], jax.Array],
    wte: Weight,
) -> jax.Array:
    """What a forward pass returns from its last block's output `x`, as `options.output` asks:
    the tied logits (of the last position only with `options.last_only`); or the residual stream
    as Hugging Face's `output_hidden_states` gives it; or each block's attention `probabilities`,
    as its `output_attentions`.

    The stream is [n_layer + 1, batch, seq, n_embd]: each block's input (entry 0 the embeddings),
    then the final LayerNorm's output, of which the logits are the projection. `block_inputs` is a
    list of the blocks' inputs, or one array of them stacked (a `lax.scan`'s outputs), and so
    is `probabilities`; they stack into [n_layer, batch, n_head, seq, keys]. Each is read only
    when it is the output asked for (a scan that was not asked for one returns None for it).
    """
    if options.output == "hidden_states":
        assert block_inputs is not None, "the blocks' inputs are kept for hidden_states"
        stacked = block_inputs if isinstance(block_inputs, jax.Array) else jnp.stack(block_inputs)
        return jnp.concatenate([stacked, ln_f(x)[None].astype(stacked.dtype)])
    if options.output == "attentions":
        assert probabilities is not None, "the probabilities are kept for attentions"
        return probabilities if isinstance(probabilities, jax.Array) else jnp.stack(probabilities)
    return tied_logits(ln_f(last_position(x, options.last_only)), wte)
