"""A text's residual stream, layer by layer: what probing and interpretability work reads.

One forward pass without a cache; the tokens are padded to a prompt bucket so texts of similar
length share one compiled program, and causal attention keeps the padding out of every real
position.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from shared.backend import Backend
from shared.config import GPT2Config
from shared.generation import check_token_ids, prompt_bucket


@functools.partial(jax.jit, static_argnames=("backend", "config"))
def _forward(params: Any, tokens: jax.Array, *, backend: Backend, config: GPT2Config) -> jax.Array:
    positions = jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape)
    states, _ = backend.apply(params, tokens, positions, None, config=config, hidden_states=True)
    return states.astype(jnp.float32)


def residual_stream(
    backend: Backend, params: Any, config: GPT2Config, ids: Sequence[int]
) -> np.ndarray:
    """float32 [n_layer + 1, len(ids), n_embd]: the embeddings, each later block's input, and the
    final LayerNorm's output (`Backend.apply(hidden_states=True)`)."""
    if not 1 <= len(ids) <= config.n_ctx:
        raise ValueError(
            f"The text is {len(ids)} tokens; hidden states need 1 to {config.n_ctx} "
            "(the model's context)."
        )
    check_token_ids(ids, "The token ids", config.n_vocab)
    tokens = np.zeros((1, min(config.n_ctx, prompt_bucket(len(ids)))), np.int32)
    tokens[0, : len(ids)] = ids
    states = _forward(params, tokens, backend=backend, config=config)
    return np.asarray(states[:, 0, : len(ids)])
