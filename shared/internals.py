"""What the model computes inside, over a text: the residual stream and the attention patterns,
layer by layer, for probing and interpretability work.

One forward pass without a cache; the tokens are padded to a prompt bucket so texts of similar
length share one compiled program, and causal attention keeps the padding out of every real
position.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from shared.apply_options import ApplyOptions, Output
from shared.backend import Backend
from shared.config import GPT2Config
from shared.generation import check_token_ids, prompt_bucket
from shared.jax_types import PyTree


@functools.partial(jax.jit, static_argnames=("backend", "config", "output"))
def _forward(
    params: PyTree, tokens: jax.Array, *, backend: Backend, config: GPT2Config, output: Output
) -> jax.Array:
    positions = jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape)
    options = ApplyOptions(output=output)
    result, _ = backend.apply(params, tokens, positions, None, config=config, options=options)
    return result.astype(jnp.float32)


def _run(
    backend: Backend, params: PyTree, config: GPT2Config, ids: Sequence[int], output: Output
) -> np.ndarray:
    """`Backend.apply` asked for `output` (`ApplyOptions.output`) over `ids` padded to a bucket:
    float32, batch of one."""
    if not 1 <= len(ids) <= config.n_ctx:
        raise ValueError(
            f"The text is {len(ids)} tokens; {output.replace('_', ' ')} need 1 to {config.n_ctx} "
            "(the model's context)."
        )
    check_token_ids(ids, "The token ids", config.n_vocab)
    tokens = np.zeros((1, min(config.n_ctx, prompt_bucket(len(ids)))), np.int32)
    tokens[0, : len(ids)] = ids
    return np.asarray(_forward(params, tokens, backend=backend, config=config, output=output)[:, 0])


def residual_stream(
    backend: Backend, params: PyTree, config: GPT2Config, ids: Sequence[int]
) -> np.ndarray:
    """float32 [n_layer + 1, len(ids), n_embd]: the embeddings, each later block's input, and the
    final LayerNorm's output (`ApplyOptions(output="hidden_states")`)."""
    return _run(backend, params, config, ids, "hidden_states")[:, : len(ids)]


def attention_patterns(
    backend: Backend, params: PyTree, config: GPT2Config, ids: Sequence[int]
) -> np.ndarray:
    """float32 [n_layer, n_head, len(ids), len(ids)]: how much each token attends to each token up
    to it, per block and head (`ApplyOptions(output="attentions")`); each row sums to 1."""
    return _run(backend, params, config, ids, "attentions")[:, :, : len(ids), : len(ids)]
