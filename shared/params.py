"""The canonical parameter tree: OpenAI's names, blocks stacked on a leading layer axis.

Every converter reads or writes this tree and every backend converts from and to it, so it is the one
place where parameter names and shapes are defined. Weights are used as `x @ w` ([in, out]).
JAX is imported by the functions that compute, so reading and writing weight files (`gpt2
download`, `gpt2 convert`) starts without it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from shared.config import GPT2Config

if TYPE_CHECKING:
    import jax

Params = dict[str, Any]
"""A nested dict of arrays; leaves are addressed by '/'-joined paths such as `blocks/attn/c_attn/w`."""


def canonical_shapes(config: GPT2Config) -> dict[str, tuple[int, ...]]:
    """Flat `{path: shape}` of every tensor of the canonical tree for `config`."""
    d, n_layer, n_vocab, n_ctx = config.n_embd, config.n_layer, config.n_vocab, config.n_ctx
    return {
        "wte": (n_vocab, d),
        "wpe": (n_ctx, d),
        "blocks/ln_1/g": (n_layer, d),
        "blocks/ln_1/b": (n_layer, d),
        "blocks/attn/c_attn/w": (n_layer, d, 3 * d),
        "blocks/attn/c_attn/b": (n_layer, 3 * d),
        "blocks/attn/c_proj/w": (n_layer, d, d),
        "blocks/attn/c_proj/b": (n_layer, d),
        "blocks/ln_2/g": (n_layer, d),
        "blocks/ln_2/b": (n_layer, d),
        "blocks/mlp/c_fc/w": (n_layer, d, 4 * d),
        "blocks/mlp/c_fc/b": (n_layer, 4 * d),
        "blocks/mlp/c_proj/w": (n_layer, 4 * d, d),
        "blocks/mlp/c_proj/b": (n_layer, d),
        "ln_f/g": (d,),
        "ln_f/b": (d,),
    }


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dict -> `{"a/b/c": leaf}`."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, prefix=f"{path}/"))
        else:
            flat[path] = value
    return flat


def unflatten(flat: Mapping[str, Any]) -> Params:
    """`{"a/b/c": leaf}` -> nested dict."""
    tree: Params = {}
    for path, value in flat.items():
        node = tree
        *parents, leaf = path.split("/")
        for name in parents:
            node = node.setdefault(name, {})
        node[leaf] = value
    return tree


def validate(tree: Mapping[str, Any], config: GPT2Config) -> None:
    """Raise one clear `ValueError` naming the first missing, unexpected or mis-shaped tensor."""
    expected = canonical_shapes(config)
    flat = flatten(tree)
    for path, shape in expected.items():
        if path not in flat:
            raise ValueError(f"Parameter {path!r} is missing; expected shape {shape}.")
        actual = tuple(np.shape(flat[path]))
        if actual != shape:
            raise ValueError(f"Parameter {path!r} has shape {actual}, but {config} needs {shape}.")
    unexpected = sorted(set(flat) - set(expected))
    if unexpected:
        raise ValueError(
            f"Unexpected parameter(s) {unexpected}; a GPT-2 tree has only {sorted(expected)}."
        )


def init_params(config: GPT2Config, key: jax.Array, dtype: Any = np.float32) -> Params:
    """GPT-2 initialisation: N(0, 0.02) weights, residual projections N(0, 0.02/sqrt(2*n_layer)),
    zero biases, LayerNorm g=1 b=0."""
    import jax
    import jax.numpy as jnp

    residual_std = 0.02 / math.sqrt(2 * config.n_layer)
    stds = {"blocks/attn/c_proj/w": residual_std, "blocks/mlp/c_proj/w": residual_std}
    shapes = canonical_shapes(config)
    keys = dict(zip(shapes, jax.random.split(key, len(shapes)), strict=True))
    flat = {}
    for path, shape in shapes.items():
        name = path.rsplit("/", 1)[-1]
        if name == "g":
            flat[path] = jnp.ones(shape, dtype)
        elif name == "b":
            flat[path] = jnp.zeros(shape, dtype)
        else:
            std = stds.get(path, 0.02)
            flat[path] = (std * jax.random.normal(keys[path], shape, jnp.float32)).astype(dtype)
    return unflatten(flat)


def cast(tree: Params, dtype: Any) -> Params:
    """Cast every floating-point leaf to `dtype` (e.g. bfloat16 weights for faster decoding).

    Host (numpy) leaves stay on the host, so a checkpoint read from disk is split into layers there
    and sent to the device once; slicing device arrays eagerly costs a compile per shape (about a
    second of `gpt2 generate`'s start).
    """
    import jax
    import jax.numpy as jnp

    return jax.tree.map(
        lambda x: np.asarray(x, dtype) if isinstance(x, np.ndarray) else jnp.asarray(x, dtype), tree
    )


def unstack_blocks(tree: Params) -> Params:
    """The tree with `blocks` split into one dict per layer (each layer its own buffers)."""
    import jax

    n_layer = jax.tree.leaves(tree["blocks"])[0].shape[0]
    layers = tuple(jax.tree.map(lambda x, i=i: x[i], tree["blocks"]) for i in range(n_layer))
    return {**tree, "blocks": layers}


def stack_blocks(tree: Params) -> Params:
    """Inverse of `unstack_blocks`: per-layer dicts back to the canonical stacked `blocks`."""
    import jax
    import jax.numpy as jnp

    return {**tree, "blocks": jax.tree.map(lambda *xs: jnp.stack(xs), *tree["blocks"])}
