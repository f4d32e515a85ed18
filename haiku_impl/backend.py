"""The haiku backend: `hk.transform`ed GPT-2 modules, parameters as haiku's `{scope: {name: array}}`."""

from __future__ import annotations

import functools

import haiku as hk
import jax
import numpy as np

from haiku_impl import convert, model
from haiku_impl.convert import HaikuParams
from shared.backend import Backend, Forward
from shared.config import GPT2Config
from shared.lora import LoraConfig
from shared.params import Params


@functools.cache
def _transformed(config: GPT2Config) -> hk.Transformed:
    """One transform per config, so repeated calls trace the same functions."""
    return model.transformed(config)


@functools.cache
def _transformed_lora(config: GPT2Config, scale: float) -> hk.Transformed:
    return model.transformed_lora(config, scale)


class HaikuBackend(Backend):
    """GPT-2 as haiku modules; parameter names are module scopes such as `gpt2/~/h0/~/attn/~/c_attn`."""

    name = "haiku"

    def init(self, config: GPT2Config, key: jax.Array) -> HaikuParams:
        """GPT-2-initialised parameters, created by the modules' own initialisers."""
        tokens = np.zeros((1, 1), np.int32)
        return _transformed(config).init(key, tokens, tokens, None)

    def from_canonical(self, tree: Params, config: GPT2Config) -> HaikuParams:
        return convert.from_canonical(tree, config)

    def to_canonical(self, params: HaikuParams, config: GPT2Config) -> Params:
        return convert.to_canonical(params, config)

    def bind(self, params: HaikuParams, config: GPT2Config) -> Forward:
        return functools.partial(_transformed(config).apply, params)

    def adapters_from_canonical(
        self, adapters: Params, config: GPT2Config, lora: LoraConfig
    ) -> HaikuParams:
        return convert.adapters_from_canonical(adapters, config, lora)

    def adapters_to_canonical(
        self, adapters: HaikuParams, config: GPT2Config, lora: LoraConfig
    ) -> Params:
        return convert.adapters_to_canonical(adapters, config, lora)

    def bind_lora(
        self, params: HaikuParams, adapters: HaikuParams, config: GPT2Config, lora: LoraConfig
    ) -> Forward:
        apply = _transformed_lora(config, lora.scale).apply
        return lambda tokens, positions, cache, options: apply(
            params, tokens, positions, cache, options, adapters
        )


backend = HaikuBackend()
