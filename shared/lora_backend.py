"""A backend with LoRA adapters: parameters `{"base": frozen weights, "adapters": trained ones}`.

The loss, the train step and evaluation take a backend and its parameters; wrapping a backend
with its adapters lets them run a LoRA model unchanged, while the step differentiates the
adapters alone (`shared.training.step`).
"""

from __future__ import annotations

import functools

import jax

from shared import lora as lora_lib
from shared.backend import Backend, Forward
from shared.config import GPT2Config
from shared.jax_types import PyTree
from shared.lora import LoraConfig
from shared.params import Params


class LoraBackend(Backend):
    """`inner` fine-tuned by `lora`; `lora_backend(inner, lora)` gives one instance per pair, so
    it is a stable static argument of `jax.jit`."""

    def __init__(self, inner: Backend, lora: LoraConfig) -> None:
        self.inner, self.lora, self.name = inner, lora, inner.name

    def init(self, config: GPT2Config, key: jax.Array) -> PyTree:
        """Fresh base weights and fresh adapters (the same in every backend for `key`)."""
        base_key, adapter_key = jax.random.split(key)
        return with_base(
            self.inner.init(config, base_key),
            self.inner.adapters_from_canonical(
                lora_lib.init_adapters(self.lora, config, adapter_key), config, self.lora
            ),
        )

    def from_canonical(self, tree: Params, config: GPT2Config) -> PyTree:
        """Base weights `tree` with fresh adapters: the base model exactly."""
        return with_base(
            self.inner.from_canonical(tree, config),
            self.inner.adapters_from_canonical(
                lora_lib.init_adapters(self.lora, config, jax.random.PRNGKey(0)), config, self.lora
            ),
        )

    def to_canonical(self, params: PyTree, config: GPT2Config) -> Params:
        """The merged weights: what `gpt2 convert --merge-lora` writes."""
        return lora_lib.merge(
            self.inner.to_canonical(params["base"], config),
            self.inner.adapters_to_canonical(params["adapters"], config, self.lora),
            self.lora.scale,
        )

    def adapters_from_canonical(
        self, adapters: Params, config: GPT2Config, lora: LoraConfig
    ) -> PyTree:
        raise NotImplementedError("LoRA adapters do not stack: merge them first.")

    def adapters_to_canonical(
        self, adapters: PyTree, config: GPT2Config, lora: LoraConfig
    ) -> Params:
        raise NotImplementedError("LoRA adapters do not stack: merge them first.")

    def bind_lora(
        self, params: PyTree, adapters: PyTree, config: GPT2Config, lora: LoraConfig
    ) -> Forward:
        raise NotImplementedError("LoRA adapters do not stack: merge them first.")

    def bind(self, params: PyTree, config: GPT2Config) -> Forward:
        return self.inner.bind_lora(params["base"], params["adapters"], config, self.lora)

    def __repr__(self) -> str:
        return f"LoraBackend({self.inner!r}, {self.lora})"


@functools.cache
def lora_backend(inner: Backend, lora: LoraConfig) -> LoraBackend:
    return LoraBackend(inner, lora)


def with_base(base: PyTree, adapters: PyTree) -> dict[str, PyTree]:
    """A `LoraBackend`'s parameters."""
    return {"base": base, "adapters": adapters}
