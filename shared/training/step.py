"""The jitted training step, apart from the loop, so `gpt2 train` and `gpt2 bench` run the same one."""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import optax

from shared.backend import Backend
from shared.config import GPT2Config
from shared.loss import language_model_loss
from shared.params import cast

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def make_train_step(
    backend: Backend,
    model_config: GPT2Config,
    optimizer: optax.GradientTransformation,
    compute_dtype: str = "float32",
) -> Any:
    """`step(params, opt_state, batches, step) -> (params, opt_state, loss, grad_norm)`.

    `batches` is [accumulation, batch, block + 1]: gradients are averaged over the leading axis
    with a scan, so accumulation costs no extra memory per micro-batch. params and opt_state are
    donated, so the update happens in place.
    """
    dtype = DTYPES[compute_dtype]

    def loss_fn(params: Any, batch: jax.Array) -> jax.Array:
        if dtype != jnp.float32:  # fp32 master weights, bf16 arithmetic
            params = cast(params, dtype)
        return language_model_loss(backend, params, batch, config=model_config)

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def train_step(params: Any, opt_state: Any, batches: jax.Array, step: jax.Array) -> tuple:
        def accumulate(totals: tuple, batch: jax.Array) -> tuple:
            loss, grads = jax.value_and_grad(loss_fn)(params, batch)
            return jax.tree.map(jnp.add, totals, (loss, grads)), None

        zeros = (jnp.zeros((), jnp.float32), jax.tree.map(jnp.zeros_like, params))
        (loss, grads), _ = jax.lax.scan(accumulate, zeros, batches)
        loss, grads = jax.tree.map(lambda x: x / batches.shape[0], (loss, grads))
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (
            optax.apply_updates(params, updates),
            opt_state,
            loss,
            optax.tree_utils.tree_norm(grads),
        )

    return train_step
