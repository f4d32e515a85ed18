"""Canonical tree <-> haiku params, exact both ways, as one table of names.

Haiku addresses a parameter by (module scope, parameter name), e.g. (`gpt2/~/h0/~/attn/~/c_attn`,
`w`); the canonical tree stacks the blocks, so layer i's tensor is `blocks/attn/c_attn/w[i]`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeAlias

import jax

from haiku_impl.model import MODEL_NAME
from shared import lora as lora_lib
from shared import name_table as name_table_lib
from shared.config import GPT2Config
from shared.lora import LoraConfig
from shared.params import Params
from shared.quantization import QuantizedWeight

HaikuParams: TypeAlias = Mapping[str, Mapping[str, jax.Array]]
"""`{module scope: {parameter name: array}}`, as `hk.transform(...).init` returns (`hk.Params`)."""

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

SCALE_SUFFIX = "_scale"
"""An int8 parameter `w` (or `embeddings`) keeps its scales beside it as `w_scale`."""


def name_table(config: GPT2Config) -> name_table_lib.Table[tuple[str, str]]:
    """Every haiku (module, parameter) of `config` -> (canonical path, layer index or None)."""
    return name_table_lib.build(
        {(f"{MODEL_NAME}/~/{module}", name): path for (module, name), path in TOP_LEVEL.items()},
        PER_LAYER,
        config.n_layer,
        lambda i, key: (f"{MODEL_NAME}/~/h{i}/~/{key[0]}", key[1]),
    )


def _describe(key: tuple[str, str]) -> str:
    return f"Haiku parameter {key[0]!r} / {key[1]!r}"


def from_canonical(tree: Params, config: GPT2Config) -> HaikuParams:
    """Canonical tree -> haiku params; layer i of each stacked tensor goes to module `h{i}`, and an
    int8 weight to its parameter and the scales beside it (`SCALE_SUFFIX`)."""
    haiku_params: dict[str, dict[str, jax.Array]] = {}
    for (module, name), value in name_table_lib.from_canonical(
        tree, config, name_table(config)
    ).items():
        named = haiku_params.setdefault(module, {})
        if isinstance(value, QuantizedWeight):
            named[name], named[name + SCALE_SUFFIX] = value.values, value.scale
        else:
            named[name] = value
    return haiku_params


def to_canonical(haiku_params: Mapping[str, Mapping[str, Any]], config: GPT2Config) -> Params:
    """Haiku params -> canonical tree, stacking modules `h0..h{n_layer-1}` on the layer axis."""
    flat = {
        (module, name): _with_scale(named, name)
        for module, named in haiku_params.items()
        for name in named
        if not (name.endswith(SCALE_SUFFIX) and name.removesuffix(SCALE_SUFFIX) in named)
    }
    return name_table_lib.to_canonical(flat, config, name_table(config), _describe)


def _with_scale(named: Mapping[str, Any], name: str) -> Any:
    """Parameter `name` of a module, joined with its scales when it is held as int8."""
    scale = named.get(name + SCALE_SUFFIX)
    return named[name] if scale is None else QuantizedWeight(named[name], scale)


def _adapter_key(layer: int, projection: str, part: str) -> tuple[str, str]:
    """("attn/c_proj", "lora_a") of layer 0 -> ("gpt2/~/h0/~/attn/~/c_proj", "lora_a")."""
    return f"{MODEL_NAME}/~/h{layer}/~/{projection.replace('/', '/~/')}", part


def adapters_from_canonical(adapters: Params, config: GPT2Config, lora: LoraConfig) -> HaikuParams:
    """Canonical adapters -> `{module scope: {lora_a, lora_b}}`, scoped like the weights they adapt."""
    haiku_adapters: dict[str, dict[str, jax.Array]] = {}
    for (module, name), value in lora_lib.to_backend(adapters, config, lora, _adapter_key).items():
        haiku_adapters.setdefault(module, {})[name] = value
    return haiku_adapters


def adapters_to_canonical(adapters: HaikuParams, config: GPT2Config, lora: LoraConfig) -> Params:
    flat = {
        (module, name): value for module, named in adapters.items() for name, value in named.items()
    }
    return lora_lib.from_backend(flat, config, lora, _adapter_key)
