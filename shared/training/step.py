"""The jitted training step, apart from the loop, so `gpt2 train` and `gpt2 bench` run the same one."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeAlias

import jax
import jax.numpy as jnp
import optax

from shared.apply_options import ApplyOptions
from shared.backend import Backend
from shared.config import GPT2Config
from shared.dropout import Dropout
from shared.jax_types import PyTree
from shared.lora_backend import with_base
from shared.loss import language_model_loss
from shared.params import cast

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}

TrainStep: TypeAlias = Callable[..., tuple[PyTree, PyTree, jax.Array, jax.Array]]
"""(params, opt_state, batches, step[, frozen]) -> (params, opt_state, loss, grad_norm)."""


def make_train_step(
    backend: Backend,
    model_config: GPT2Config,
    optimizer: optax.GradientTransformation,
    compute_dtype: str = "float32",
    *,
    dropout_rate: float = 0.0,
    dropout_stream: jax.Array | None = None,
    gather: Callable[[PyTree], PyTree] | None = None,
    remat: bool = False,
) -> TrainStep:
    """`step(params, opt_state, batches, step, frozen=None) -> (params, opt_state, loss,
    grad_norm)`.

    `batches` is [accumulation, batch, block + 1]: gradients are averaged over the leading axis
    with a scan, so accumulation costs no extra memory per micro-batch. params and opt_state are
    donated, so the update happens in place. Micro-batch i drops out with the key
    fold_in(dropout_stream, step * accumulation + i), like its batch, so a resumed run draws the
    same masks. `gather` turns the (possibly sharded) parameters into the full ones the forward
    pass needs. `remat` recomputes each block in the backward pass instead of keeping its
    activations (`ApplyOptions.remat`).

    With LoRA, `backend` is a `shared.lora_backend.LoraBackend`, `params` are its adapters (all
    that is differentiated, updated and given optimizer state) and `frozen` its base weights,
    which enter the loss as a constant.
    """
    dtype = DTYPES[compute_dtype]
    dropout_stream = jax.random.PRNGKey(0) if dropout_stream is None else dropout_stream
    gather = gather or (lambda params: params)

    def loss_fn(
        params: PyTree, batch: jax.Array, dropout_key: jax.Array, frozen: PyTree
    ) -> jax.Array:
        if frozen is not None:
            params = with_base(frozen, params)
        if dtype != jnp.float32:  # fp32 master weights, bf16 arithmetic
            params = cast(params, dtype)
        params = gather(params)
        dropout = Dropout(dropout_rate, dropout_key) if dropout_rate > 0 else None
        options = ApplyOptions(dropout=dropout, remat=remat)
        return language_model_loss(backend, params, batch, config=model_config, options=options)

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def train_step(
        params: PyTree,
        opt_state: PyTree,
        batches: jax.Array,
        step: jax.Array,
        frozen: PyTree = None,
    ) -> tuple[PyTree, PyTree, jax.Array, jax.Array]:
        micro_steps = step * batches.shape[0] + jnp.arange(batches.shape[0])
        dropout_keys = jax.vmap(functools.partial(jax.random.fold_in, dropout_stream))(micro_steps)

        def accumulate(
            totals: tuple[jax.Array, PyTree], micro_batch: tuple[jax.Array, jax.Array]
        ) -> tuple[tuple[jax.Array, PyTree], None]:
            loss, grads = jax.value_and_grad(loss_fn)(params, *micro_batch, frozen)
            return jax.tree.map(jnp.add, totals, (loss, grads)), None

        zeros = (jnp.zeros((), jnp.float32), jax.tree.map(jnp.zeros_like, params))
        (loss, grads), _ = jax.lax.scan(accumulate, zeros, (batches, dropout_keys))
        loss, grads = jax.tree.map(lambda x: x / batches.shape[0], (loss, grads))
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (
            optax.apply_updates(params, updates),
            opt_state,
            loss,
            optax.tree_utils.tree_norm(grads),
        )

    return train_step
