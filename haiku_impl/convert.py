"""Canonical tree <-> haiku params, exact both ways, as one table of names.

Haiku addresses a parameter by (module scope, parameter name), e.g. (`gpt2/~/h0/~/attn/~/c_attn`,
`w`); the canonical tree stacks the blocks, so layer i's tensor is `blocks/attn/c_attn/w[i]`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp

from haiku_impl.model import MODEL_NAME
from shared import params
from shared.config import GPT2Config
from shared.params import Params

HaikuParams = dict[str, dict[str, Any]]
"""`{module scope: {parameter name: array}}`, as `hk.transform(...).init` returns."""

TOP_LEVEL: dict[tuple[str, str], str] = {
    ("wte", "embeddings"): "wte",
    ("wpe", "embeddings"): "wpe",
    ("ln_f", "scale"): "ln_f/g",
    ("ln_f", "offset"): "ln_f/b",
}
"""(module under `gpt2/~/`, parameter) -> canonical path."""

PER_LAYER: dict[tuple[str, str], str] = {
    ("ln_1", "scale"): "blocks/ln_1/g",
    ("ln_1", "offset"): "blocks/ln_1/b",
    ("attn/~/c_attn", "w"): "blocks/attn/c_attn/w",
    ("attn/~/c_attn", "b"): "blocks/attn/c_attn/b",
    ("attn/~/c_proj", "w"): "blocks/attn/c_proj/w",
    ("attn/~/c_proj", "b"): "blocks/attn/c_proj/b",
    ("ln_2", "scale"): "blocks/ln_2/g",
    ("ln_2", "offset"): "blocks/ln_2/b",
    ("mlp/~/c_fc", "w"): "blocks/mlp/c_fc/w",
    ("mlp/~/c_fc", "b"): "blocks/mlp/c_fc/b",
    ("mlp/~/c_proj", "w"): "blocks/mlp/c_proj/w",
    ("mlp/~/c_proj", "b"): "blocks/mlp/c_proj/b",
}
"""(module under `gpt2/~/h{i}/~/`, parameter) -> canonical path, indexed by layer i."""


def name_table(config: GPT2Config) -> dict[tuple[str, str], tuple[str, int | None]]:
    """Every haiku (module, parameter) of `config` -> (canonical path, layer index or None)."""
    table: dict[tuple[str, str], tuple[str, int | None]] = {
        (f"{MODEL_NAME}/~/{module}", name): (path, None)
        for (module, name), path in TOP_LEVEL.items()
    }
    for i in range(config.n_layer):
        for (module, name), path in PER_LAYER.items():
            table[(f"{MODEL_NAME}/~/h{i}/~/{module}", name)] = (path, i)
    return table


def from_canonical(tree: Params, config: GPT2Config) -> HaikuParams:
    """Canonical tree -> haiku params; layer i of each stacked tensor goes to module `h{i}`."""
    params.validate(tree, config)
    flat = params.flatten(tree)
    haiku_params: HaikuParams = {}
    for (module, name), (path, layer) in name_table(config).items():
        value = flat[path] if layer is None else flat[path][layer]
        haiku_params.setdefault(module, {})[name] = jnp.asarray(value)
    return haiku_params


def to_canonical(haiku_params: Mapping[str, Mapping[str, Any]], config: GPT2Config) -> Params:
    """Haiku params -> canonical tree, stacking modules `h0..h{n_layer-1}` on the layer axis."""
    _check(haiku_params, config)
    flat: dict[str, Any] = {}
    layers: dict[str, list[Any]] = {}
    for (module, name), (path, layer) in name_table(config).items():
        value = haiku_params[module][name]
        if layer is None:
            flat[path] = value
        else:
            layers.setdefault(path, []).append(value)
    flat.update({path: jnp.stack(values) for path, values in layers.items()})
    return params.unflatten(flat)


def _check(haiku_params: Mapping[str, Mapping[str, Any]], config: GPT2Config) -> None:
    """Raise one ValueError naming the first missing, mis-shaped or unexpected haiku parameter."""
    shapes = params.canonical_shapes(config)
    table = name_table(config)
    for (module, name), (path, layer) in table.items():
        expected = shapes[path] if layer is None else shapes[path][1:]
        if name not in haiku_params.get(module, {}):
            raise ValueError(
                f"Haiku parameter {module!r} / {name!r} is missing; expected shape {expected}."
            )
        actual = tuple(jnp.shape(haiku_params[module][name]))
        if actual != expected:
            raise ValueError(
                f"Haiku parameter {module!r} / {name!r} has shape {actual}, but {config} needs "
                f"{expected}."
            )
    unexpected = sorted(
        f"{module} / {name}"
        for module, module_params in haiku_params.items()
        for name in module_params
        if (module, name) not in table
    )
    if unexpected:
        raise ValueError(
            f"Unexpected haiku parameter(s) {unexpected}; a GPT-2 with {config.n_layer} layers has "
            f"modules {MODEL_NAME}/~/wte, wpe, h0..h{config.n_layer - 1}, ln_f only."
        )
