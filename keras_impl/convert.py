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

from shared import params
from shared.config import GPT2Config
from shared.params import Params

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


def name_table(config: GPT2Config) -> dict[str, tuple[str, int | None]]:
    """Every Keras variable path of `config` -> (canonical path, layer index or None)."""
    table: dict[str, tuple[str, int | None]] = {
        path: (canonical, None) for path, canonical in TOP_LEVEL.items()
    }
    for i in range(config.n_layer):
        for path, canonical in PER_LAYER.items():
            table[f"h{i}/{path}"] = (canonical, i)
    return table


def variable_path(model: keras.Model, variable: keras.Variable) -> str:
    """A weight's path below the model (`h0/attn/c_attn/kernel`), whatever the model is named."""
    prefix = f"{model.name}/"
    return variable.path[len(prefix) :] if variable.path.startswith(prefix) else variable.path


def model_params(model: keras.Model) -> KerasParams:
    """The model's current trainable weights as `{variable path: array}`."""
    return {variable_path(model, v): v.value for v in model.trainable_variables}


def from_canonical(tree: Params, config: GPT2Config) -> KerasParams:
    """Canonical tree -> Keras params; layer i of each stacked tensor goes to layer `h{i}`."""
    params.validate(tree, config)
    flat = params.flatten(tree)
    return {
        path: jnp.asarray(flat[canonical] if layer is None else flat[canonical][layer])
        for path, (canonical, layer) in name_table(config).items()
    }


def to_canonical(keras_params: Mapping[str, Any], config: GPT2Config) -> Params:
    """Keras params -> canonical tree, stacking layers `h0..h{n_layer-1}` on the layer axis."""
    _check(keras_params, config)
    flat: dict[str, Any] = {}
    layers: dict[str, list[Any]] = {}
    for path, (canonical, layer) in name_table(config).items():
        if layer is None:
            flat[canonical] = keras_params[path]
        else:
            layers.setdefault(canonical, []).append(keras_params[path])
    flat.update({canonical: jnp.stack(values) for canonical, values in layers.items()})
    return params.unflatten(flat)


def load_into(model: keras.Model, tree: Params) -> None:
    """Assign canonical weights to a built `GPT2LM` (its config must match the tree's shapes)."""
    values = from_canonical(tree, model.config)
    for variable in model.trainable_variables:
        variable.assign(values[variable_path(model, variable)])


def _check(keras_params: Mapping[str, Any], config: GPT2Config) -> None:
    """Raise one ValueError naming the first missing, mis-shaped or unexpected Keras variable."""
    shapes = params.canonical_shapes(config)
    table = name_table(config)
    for path, (canonical, layer) in table.items():
        expected = shapes[canonical] if layer is None else shapes[canonical][1:]
        if path not in keras_params:
            raise ValueError(f"Keras variable {path!r} is missing; expected shape {expected}.")
        actual = tuple(jnp.shape(keras_params[path]))
        if actual != expected:
            raise ValueError(
                f"Keras variable {path!r} has shape {actual}, but {config} needs {expected}."
            )
    unexpected = sorted(set(keras_params) - set(table))
    if unexpected:
        raise ValueError(
            f"Unexpected Keras variable(s) {unexpected}; a GPT-2 with {config.n_layer} layers has "
            f"wte, wpe, h0..h{config.n_layer - 1} and ln_f only."
        )
