"""Canonical tree <-> Keras weights, exact both ways, as one table of names.

A Keras weight is addressed by its variable path below the model, e.g. `h0/attn/c_attn/kernel`
(layer `h0`, sublayer `attn`, `Dense` layer `c_attn`, weight `kernel`); the canonical tree stacks
the blocks, so layer i's tensor is `blocks/attn/c_attn/w[i]`. Dense kernels are [in, out], the
canonical layout, so nothing is transposed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import keras

from shared import lora as lora_lib
from shared import name_table as name_table_lib
from shared.config import GPT2Config
from shared.lora import LoraConfig
from shared.params import Params
from shared.quantization import QuantizedWeight

KerasParams = dict[str, jax.Array]
"""`{variable path below the model: array}`, e.g. `{"h0/attn/c_attn/kernel": ...}`."""

TOP_LEVEL: dict[str, str] = {
    "wte/embeddings": "wte",
    "wpe/embeddings": "wpe",
    "ln_f/gamma": "ln_f/g",
    "ln_f/beta": "ln_f/b",
}
"""Keras path -> canonical path of the tensors outside the blocks."""

PER_LAYER: dict[str, str] = {
    "ln_1/gamma": "blocks/ln_1/g",
    "ln_1/beta": "blocks/ln_1/b",
    "attn/c_attn/kernel": "blocks/attn/c_attn/w",
    "attn/c_attn/bias": "blocks/attn/c_attn/b",
    "attn/c_proj/kernel": "blocks/attn/c_proj/w",
    "attn/c_proj/bias": "blocks/attn/c_proj/b",
    "ln_2/gamma": "blocks/ln_2/g",
    "ln_2/beta": "blocks/ln_2/b",
    "mlp/c_fc/kernel": "blocks/mlp/c_fc/w",
    "mlp/c_fc/bias": "blocks/mlp/c_fc/b",
    "mlp/c_proj/kernel": "blocks/mlp/c_proj/w",
    "mlp/c_proj/bias": "blocks/mlp/c_proj/b",
}
"""Keras path below `h{i}/` -> canonical path, indexed by layer i."""

SCALE_SUFFIX = "_scale"
"""Keras' int8 `kernel` and `embeddings` keep their scales beside them (`kernel_scale`, one per
output channel). Keras' scale is the inverse of `shared.quantization`'s: it divides by it."""


def name_table(config: GPT2Config) -> name_table_lib.Table[str]:
    """Every Keras variable path of `config` -> (canonical path, layer index or None)."""
    return name_table_lib.build(
        TOP_LEVEL, PER_LAYER, config.n_layer, lambda i, path: f"h{i}/{path}"
    )


def _describe(path: str) -> str:
    return f"Keras variable {path!r}"


def variable_path(model: keras.Model, variable: keras.Variable) -> str:
    """A weight's path below the model (`h0/attn/c_attn/kernel`), whatever the model is named."""
    prefix = f"{model.name}/"
    return variable.path[len(prefix) :] if variable.path.startswith(prefix) else variable.path


def model_params(model: keras.Model) -> KerasParams:
    """The model's current weights, frozen ones included, as `{variable path: array}`."""
    return {variable_path(model, v): v.value for v in model.weights}


def from_canonical(tree: Params, config: GPT2Config) -> KerasParams:
    """Canonical tree -> Keras params; layer i of each stacked tensor goes to layer `h{i}`, and an
    int8 weight to Keras' int8 variables (`SCALE_SUFFIX`)."""
    values: KerasParams = {}
    for path, value in name_table_lib.from_canonical(tree, config, name_table(config)).items():
        if isinstance(value, QuantizedWeight):
            values[path + SCALE_SUFFIX] = 1 / value.scale.reshape(-1)
            value = value.values
        values[path] = value
    return values


def to_canonical(keras_params: Mapping[str, Any], config: GPT2Config) -> Params:
    """Keras params -> canonical tree, stacking layers `h0..h{n_layer-1}` on the layer axis (an
    int8 weight's scales are the inverses of Keras', so exact up to one rounding of each)."""
    values = {
        path: _with_scale(keras_params, path)
        for path in keras_params
        if not (path.endswith(SCALE_SUFFIX) and path.removesuffix(SCALE_SUFFIX) in keras_params)
    }
    return name_table_lib.to_canonical(values, config, name_table(config), _describe)


def _with_scale(keras_params: Mapping[str, Any], path: str) -> Any:
    """Weight `path`, joined with its scales (as `shared.quantization` keeps them) when int8."""
    scale = keras_params.get(path + SCALE_SUFFIX)
    if scale is None:
        return keras_params[path]
    input_axis = -1 if path.endswith("embeddings") else -2  # wte: one scale per vocabulary row
    return QuantizedWeight(keras_params[path], jnp.expand_dims(1 / scale, input_axis))


def load_into(model: keras.Model, tree: Params) -> None:
    """Assign copies of canonical weights to a built `GPT2LM` (its config must match the tree's
    shapes): Keras' trainer donates variable buffers, which would delete the caller's arrays."""
    values = from_canonical(tree, model.config)
    for variable in model.weights:  # frozen layers' too
        variable.assign(jnp.array(values[variable_path(model, variable)], copy=True))


ADAPTER_WEIGHTS = {"lora_a": "lora_kernel_a", "lora_b": "lora_kernel_b"}
"""Canonical adapter name -> the weight `keras.layers.Dense.enable_lora` adds."""


def _adapter_path(layer: int, projection: str, part: str) -> str:
    """("attn/c_attn", "lora_a") of layer 0 -> "h0/attn/c_attn/lora_kernel_a"."""
    return f"h{layer}/{projection}/{ADAPTER_WEIGHTS[part]}"


def adapters_from_canonical(adapters: Params, config: GPT2Config, lora: LoraConfig) -> KerasParams:
    return lora_lib.to_backend(adapters, config, lora, _adapter_path)


def adapters_to_canonical(
    adapters: Mapping[str, Any], config: GPT2Config, lora: LoraConfig
) -> Params:
    return lora_lib.from_backend(adapters, config, lora, _adapter_path)
