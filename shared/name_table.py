"""Canonical tree <-> a backend's per-layer parameters, driven by a table of names.

A backend states once which of its parameter keys holds which canonical tensor (and, inside the
blocks, which layer); gathering, stacking and the checks that name a wrong parameter live here.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from typing import Any, TypeAlias, TypeVar

import jax
import jax.numpy as jnp

from shared import params
from shared.config import GPT2Config
from shared.params import Params

K = TypeVar("K", bound=Hashable)
"""A backend's parameter key: a Keras variable path, a Haiku (module, parameter) pair."""

Table: TypeAlias = dict[K, tuple[str, int | None]]
"""Backend key -> (canonical path, layer index, or None outside the blocks)."""


def build(
    top_level: Mapping[K, str],
    per_layer: Mapping[K, str],
    n_layer: int,
    layer_key: Callable[[int, K], K],
) -> Table[K]:
    """The full table: `top_level` as is, `per_layer` repeated for layers 0..n_layer-1."""
    table: Table[K] = {key: (path, None) for key, path in top_level.items()}
    for i in range(n_layer):
        table.update({layer_key(i, key): (path, i) for key, path in per_layer.items()})
    return table


def from_canonical(tree: Params, config: GPT2Config, table: Table[K]) -> dict[K, Any]:
    """Canonical tree -> `{backend key: array}`; layer i of each stacked tensor to its own key
    (an int8 weight stays one `shared.quantization.QuantizedWeight`)."""
    params.validate(tree, config)
    flat = params.flatten(tree)
    return {
        key: jax.tree.map(jnp.asarray, flat[path] if layer is None else flat[path][layer])
        for key, (path, layer) in table.items()
    }


def to_canonical(
    values: Mapping[K, Any],
    config: GPT2Config,
    table: Table[K],
    describe: Callable[[K], str],
) -> Params:
    """`{backend key: array}` -> canonical tree, stacking the layers; errors name the parameter
    with `describe(key)`."""
    check(values, config, table, describe)
    flat: dict[str, Any] = {}
    layers: dict[str, list[Any]] = {}
    for key, (path, layer) in table.items():
        if layer is None:
            flat[path] = values[key]
        else:
            layers.setdefault(path, []).append(values[key])
    flat.update({path: _stack(stacked) for path, stacked in layers.items()})
    return params.unflatten(flat)


def _stack(layers: list[Any]) -> Any:
    """Per-layer arrays (or int8 weights with their scales) stacked on a leading layer axis."""
    return jax.tree.map(lambda *xs: jnp.stack(xs), *layers)


def check(
    values: Mapping[K, Any],
    config: GPT2Config,
    table: Table[K],
    describe: Callable[[K], str],
) -> None:
    """Raise one ValueError naming the first missing, mis-shaped or unexpected parameter."""
    shapes = params.canonical_shapes(config)
    for key, (path, layer) in table.items():
        expected = shapes[path] if layer is None else shapes[path][1:]
        if key not in values:
            raise ValueError(f"{describe(key)} is missing; expected shape {expected}.")
        actual = tuple(jnp.shape(values[key]))
        if actual != expected:
            raise ValueError(f"{describe(key)} has shape {actual}, but {config} needs {expected}.")
    unexpected = sorted(describe(key) for key in values if key not in table)
    if unexpected:
        raise ValueError(
            f"Unexpected {', '.join(unexpected)}: a GPT-2 with {config.n_layer} layers has no such "
            "parameter."
        )
