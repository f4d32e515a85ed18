"""The functional backend: the canonical tree, with its blocks held one dict per layer."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from functional_impl.model import gpt2
from shared import kv_cache, params
from shared.apply_options import ApplyOptions
from shared.config import GPT2Config
from shared.kv_cache import KVCache
from shared.params import Params


class FunctionalBackend:
    """Reference backend: pure functions over the canonical tree.

    Parameters are the canonical tree with `blocks` unstacked into a tuple of per-layer dicts:
    separate buffers let XLA read each layer's weights in place, which decodes much faster on CPU
    than `lax.scan` over the stacked tree (the model functions accept both).
    """

    name = "functional"

    def init(self, config: GPT2Config, key: jax.Array) -> Params:
        return params.unstack_blocks(params.init_params(config, key))

    def from_canonical(self, tree: Params, config: GPT2Config) -> Params:
        params.validate(tree, config)
        return jax.device_put(params.unstack_blocks(tree))

    def to_canonical(self, tree: Params, config: GPT2Config) -> Params:
        canonical = params.stack_blocks(tree)
        params.validate(canonical, config)
        return canonical

    def apply(
        self,
        tree: Params,
        tokens: jax.Array,
        positions: jax.Array,
        cache: KVCache | None,
        *,
        config: GPT2Config,
        options: ApplyOptions = ApplyOptions(),
    ) -> tuple[jax.Array, KVCache | None]:
        return gpt2(
            tokens, positions, **tree, n_head=config.n_head, eps=config.ln_eps, cache=cache,
            options=options,
        )  # fmt: skip

    def init_cache(self, config: GPT2Config, batch: int, max_len: int, dtype: jnp.dtype) -> KVCache:
        return kv_cache.init_cache(config, batch, max_len, dtype)

    def __repr__(self) -> str:
        return "FunctionalBackend()"


backend = FunctionalBackend()
