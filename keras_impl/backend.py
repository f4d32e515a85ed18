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
from shared.lora import LoraConfig
from shared.params import Params


@functools.cache
def _model(config: GPT2Config, dtype: str, lora: LoraConfig | None = None) -> GPT2LM:
    """One built model per (config, dtype, LoRA) (`apply` passes `remat` with the rest of its
    options to each call). Dtype "int8" is a float32 model holding Keras' weight-only int8. With
    `lora` the targeted `Dense` layers have Keras' own LoRA enabled, which freezes their kernels:
    those move to the non-trainable variables.

    The model is only the function: `apply` passes the weights in, so its own variables are never
    read. It is therefore built under `jax.eval_shape`, where its variables get shapes but no
    storage and no random initialisation: building it is quick and holds no second copy of the
    weights (6 GB at 1558M). The dtype is the parameters' own, so `stateless_call` casts nothing.
    """
    int8 = dtype == "int8"
    built: list[GPT2LM] = []

    def build() -> None:
        built.append(GPT2LM(config, int8=int8, dtype="float32" if int8 else dtype))
        if lora is not None:
            built[0].enable_lora(lora.rank, lora.alpha, lora.targets)

    jax.eval_shape(build)
    return built[0]


def stateless_forward(model: GPT2LM, keras_params: KerasParams) -> Forward:
    """`model` run by `stateless_call` on `keras_params`, as `apply` runs it; Keras' int8 weights
    and scales, and the kernels LoRA freezes, are its non-trainable variables."""
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

    def adapters_from_canonical(
        self, adapters: Params, config: GPT2Config, lora: LoraConfig
    ) -> KerasParams:
        """`{"h0/attn/c_attn/lora_kernel_a": ...}`: the weights `Dense.enable_lora` adds."""
        return convert.adapters_from_canonical(adapters, config, lora)

    def adapters_to_canonical(
        self, adapters: KerasParams, config: GPT2Config, lora: LoraConfig
    ) -> Params:
        return convert.adapters_to_canonical(adapters, config, lora)

    def bind_lora(
        self, keras_params: KerasParams, adapters: KerasParams, config: GPT2Config, lora: LoraConfig
    ) -> Forward:
        return self._bind({**keras_params, **adapters}, config, lora)

    def bind(self, keras_params: KerasParams, config: GPT2Config) -> Forward:
        return self._bind(keras_params, config, None)

    def _bind(
        self, keras_params: KerasParams, config: GPT2Config, lora: LoraConfig | None
    ) -> Forward:
        dtype = jnp.dtype(keras_params["wte/embeddings"].dtype).name
        return stateless_forward(_model(config, dtype, lora), keras_params)


backend = KerasBackend()
