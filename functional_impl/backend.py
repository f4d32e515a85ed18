"""The functional backend: the canonical tree, with its blocks held one dict per layer."""

from __future__ import annotations

import jax

from functional_impl.model import gpt2
from shared import lora as lora_lib
from shared import params
from shared.backend import Backend, Forward
from shared.config import GPT2Config
from shared.lora import LoraConfig
from shared.params import Params


class FunctionalBackend(Backend):
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

    def adapters_from_canonical(
        self, adapters: Params, config: GPT2Config, lora: LoraConfig
    ) -> Params:
        """The adapter tree beside the parameter tree: `blocks` per layer like the weights'."""
        lora_lib.validate(adapters, lora, config)
        return params.unstack_blocks(adapters)

    def adapters_to_canonical(
        self, adapters: Params, config: GPT2Config, lora: LoraConfig
    ) -> Params:
        canonical = params.stack_blocks(adapters)
        lora_lib.validate(canonical, lora, config)
        return canonical

    def bind_lora(
        self, tree: Params, adapters: Params, config: GPT2Config, lora: LoraConfig
    ) -> Forward:
        """The model functions over the tree whose adapted weights carry their factors."""
        return self.bind(lora_lib.adapted(tree, adapters, lora.scale), config)

    def bind(self, tree: Params, config: GPT2Config) -> Forward:
        return lambda tokens, positions, cache, options: gpt2(
            tokens, positions, **tree, n_head=config.n_head, eps=config.ln_eps, cache=cache,
            options=options,
        )  # fmt: skip


backend = FunctionalBackend()
