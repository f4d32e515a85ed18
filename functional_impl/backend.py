"""The functional backend: parameters are the canonical tree itself."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from functional_impl.model import gpt2
from shared import kv_cache, params
from shared.config import GPT2Config
from shared.kv_cache import KVCache
from shared.params import Params


class FunctionalBackend:
    """Reference backend: pure functions over the canonical tree, no conversion needed."""

    name = "functional"

    def init(self, config: GPT2Config, key: jax.Array) -> Params:
        return params.init_params(config, key)

    def from_canonical(self, tree: Params, config: GPT2Config) -> Params:
        params.validate(tree, config)
        return jax.tree.map(jnp.asarray, tree)

    def to_canonical(self, tree: Params, config: GPT2Config) -> Params:
        params.validate(tree, config)
        return tree

    def apply(
        self,
        tree: Params,
        tokens: jax.Array,
        positions: jax.Array,
        cache: KVCache | None,
        *,
        config: GPT2Config,
    ) -> tuple[jax.Array, KVCache | None]:
        return gpt2(tokens, positions, **tree, n_head=config.n_head, eps=config.ln_eps, cache=cache)

    def init_cache(self, config: GPT2Config, batch: int, max_len: int, dtype: jnp.dtype) -> KVCache:
        return kv_cache.init_cache(config, batch, max_len, dtype)

    def __repr__(self) -> str:
        return "FunctionalBackend()"


backend = FunctionalBackend()
