"""The haiku backend: `hk.transform`ed GPT-2 modules, parameters as haiku's `{scope: {name: array}}`."""

from __future__ import annotations

import functools

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

from haiku_impl import convert, model
from haiku_impl.convert import HaikuParams
from shared import kv_cache
from shared.apply_options import ApplyOptions
from shared.config import GPT2Config
from shared.kv_cache import KVCache
from shared.params import Params


@functools.cache
def _transformed(config: GPT2Config) -> hk.Transformed:
    """One transform per config, so repeated calls trace the same functions."""
    return model.transformed(config)


class HaikuBackend:
    """GPT-2 as haiku modules; parameter names are module scopes such as `gpt2/~/h0/~/attn/~/c_attn`.

    Stateless and hashable (by identity), so it can be a static argument of `jax.jit`.
    """

    name = "haiku"

    def init(self, config: GPT2Config, key: jax.Array) -> HaikuParams:
        """GPT-2-initialised parameters, created by the modules' own initialisers."""
        tokens = np.zeros((1, 1), np.int32)
        return _transformed(config).init(key, tokens, tokens, None)

    def from_canonical(self, tree: Params, config: GPT2Config) -> HaikuParams:
        return convert.from_canonical(tree, config)

    def to_canonical(self, params: HaikuParams, config: GPT2Config) -> Params:
        return convert.to_canonical(params, config)

    def apply(
        self,
        params: HaikuParams,
        tokens: jax.Array,
        positions: jax.Array,
        cache: KVCache | None,
        *,
        config: GPT2Config,
        options: ApplyOptions = ApplyOptions(),
    ) -> tuple[jax.Array, KVCache | None]:
        return _transformed(config).apply(params, tokens, positions, cache, options)

    def init_cache(self, config: GPT2Config, batch: int, max_len: int, dtype: jnp.dtype) -> KVCache:
        return kv_cache.init_cache(config, batch, max_len, dtype)

    def __repr__(self) -> str:
        return "HaikuBackend()"


backend = HaikuBackend()
