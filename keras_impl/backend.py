"""The Keras backend: a `GPT2LM` run through `stateless_call`, parameters as `{variable path: array}`."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from keras_impl import convert
from keras_impl.convert import KerasParams
from keras_impl.model import GPT2LM
from shared import params
from shared.apply_options import ApplyOptions
from shared.backend import Backend, Forward
from shared.config import GPT2Config
from shared.kv_cache import KVCache
from shared.params import Params


@functools.cache
def _model(config: GPT2Config, dtype: str) -> GPT2LM:
    """One built model per (config, dtype) (`apply` passes `remat` with the rest of its options
    to each call). Dtype "int8" is a float32 model holding Keras' weight-only int8.

    The model is only the function: `apply` passes the weights in, so its own variables are never
    read. It is therefore built under `jax.eval_shape`, where its variables get shapes but no
    storage and no random initialisation: building it is quick and holds no second copy of the
    weights (6 GB at 1558M). The dtype is the parameters' own, so `stateless_call` casts nothing.
    """
    int8 = dtype == "int8"
    built: list[GPT2LM] = []
    jax.eval_shape(
        lambda: built.append(GPT2LM(config, int8=int8, dtype="float32" if int8 else dtype))
    )
    return built[0]


def stateless_forward(model: GPT2LM, keras_params: KerasParams) -> Forward:
    """`model` run by `stateless_call` on `keras_params`, as `apply` runs it; Keras' int8 weights
    and scales are its non-trainable variables."""
    values, frozen = (
        [keras_params[convert.variable_path(model, v)] for v in variables]
        for variables in (model.trainable_variables, model.non_trainable_variables)
    )

    def forward(
        tokens: jax.Array, positions: jax.Array, cache: KVCache | None, options: ApplyOptions
    ) -> tuple[jax.Array, KVCache | None]:
        # (outputs, non-trainable values); only `return_losses=True` adds the losses
        outputs = model.stateless_call(
            values, frozen, tokens, positions=positions, cache=cache, options=options
        )[0]
        return outputs if cache is not None else (outputs, None)

    return forward


class KerasBackend(Backend):
    """GPT-2 as Keras 3 layers on JAX; parameter names are variable paths like `h0/attn/c_attn/kernel`.

    Parameters are a flat dict of plain JAX arrays (jittable, and readable by name); `bind` feeds
    them to the cached model's `stateless_call`, so `apply` is pure and runs inside `jax.jit` and
    the shared decode loop.
    """

    name = "keras"

    def init(self, config: GPT2Config, key: jax.Array) -> KerasParams:
        """GPT-2-initialised parameters: the canonical initialisation for `key`, converted.

        So the same key gives the very same weights in every backend, and this is jittable.
        """
        return convert.from_canonical(params.init_params(config, key), config)

    def from_canonical(self, tree: Params, config: GPT2Config) -> KerasParams:
        return convert.from_canonical(tree, config)

    def to_canonical(self, keras_params: KerasParams, config: GPT2Config) -> Params:
        return convert.to_canonical(keras_params, config)

    def bind(self, keras_params: KerasParams, config: GPT2Config) -> Forward:
        dtype = jnp.dtype(keras_params["wte/embeddings"].dtype).name
        return stateless_forward(_model(config, dtype), keras_params)


backend = KerasBackend()
