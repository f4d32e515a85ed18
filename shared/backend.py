"""The backend contract and registry: what a backend must provide, and how to get one by name.

Everything that is not the forward pass (weights I/O, sampling, the decode loop, the loss, the CLI) is
written once against this class. A backend subclasses it and writes only what differs: how it
holds parameters and how it binds them into its forward pass.
"""

from __future__ import annotations

import abc
import importlib
from collections.abc import Callable
from typing import TypeAlias

import jax
import jax.numpy as jnp

from shared import kv_cache
from shared.apply_options import ApplyOptions
from shared.config import GPT2Config
from shared.jax_types import PyTree
from shared.kv_cache import KVCache
from shared.lora import LoraConfig
from shared.params import Params

Forward: TypeAlias = Callable[
    [jax.Array, jax.Array, KVCache | None, ApplyOptions], tuple[jax.Array, KVCache | None]
]
"""A forward pass with its parameters bound: (tokens, positions, cache, options) -> (output, cache),
as `Backend.apply` describes."""


class Backend(abc.ABC):
    """A GPT-2 implementation: how it holds parameters and how it runs the forward pass.

    Stateless and hashable (by identity), so a backend can be a static argument of `jax.jit`.
    """

    name: str

    @abc.abstractmethod
    def init(self, config: GPT2Config, key: jax.Array) -> PyTree:
        """Fresh GPT-2-initialised parameters in the backend's own format."""

    @abc.abstractmethod
    def from_canonical(self, tree: Params, config: GPT2Config) -> PyTree:
        """Canonical tree -> backend parameters (exact)."""

    @abc.abstractmethod
    def to_canonical(self, params: PyTree, config: GPT2Config) -> Params:
        """Backend parameters -> canonical tree (exact)."""

    @abc.abstractmethod
    def bind(self, params: PyTree, config: GPT2Config) -> Forward:
        """The backend's model for `config` with `params` in place: what `apply` runs."""

    @abc.abstractmethod
    def adapters_from_canonical(
        self, adapters: Params, config: GPT2Config, lora: LoraConfig
    ) -> PyTree:
        """Canonical LoRA adapters (`shared.lora`) -> the backend's own (exact)."""

    @abc.abstractmethod
    def adapters_to_canonical(
        self, adapters: PyTree, config: GPT2Config, lora: LoraConfig
    ) -> Params:
        """The backend's LoRA adapters -> canonical ones (exact)."""

    @abc.abstractmethod
    def bind_lora(
        self, params: PyTree, adapters: PyTree, config: GPT2Config, lora: LoraConfig
    ) -> Forward:
        """`bind` with each targeted weight read as `shared.lora.merged_weight` of it and its
        adapters (formed, or kept as `shared.linear.AdaptedWeight`, as the backend's idiom
        goes); differentiating the forward by `adapters` alone leaves `params` a constant."""

    def apply(
        self,
        params: PyTree,
        tokens: jax.Array,
        positions: jax.Array,
        cache: KVCache | None,
        *,
        config: GPT2Config,
        options: ApplyOptions = ApplyOptions(),
    ) -> tuple[jax.Array, KVCache | None]:
        """Pure, jittable forward pass: tokens/positions [batch, seq] -> logits [batch, seq, n_vocab].

        With `cache=None` this is the training forward (causal mask); with a cache the new tokens are
        written at `cache.index` and attend to everything cached before them. `options`
        (`shared.apply_options.ApplyOptions`) turns on training dropout (drawn by
        `shared.dropout.drop`, so every backend draws the same masks for the same key) and
        rematerialisation, cuts the logits to the last position (a prefill), or asks for the
        residual stream or the attention probabilities in place of the logits.
        """
        return self.bind(params, config)(tokens, positions, cache, options)

    def init_cache(self, config: GPT2Config, batch: int, max_len: int, dtype: jnp.dtype) -> KVCache:
        """An empty cache for `batch` rows of up to `max_len` token slots (`shared.kv_cache`)."""
        return kv_cache.init_cache(config, batch, max_len, dtype)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


_REGISTRY: dict[str, str] = {
    "functional": "functional_impl.backend:backend",
    "haiku": "haiku_impl.backend:backend",
    "keras": "keras_impl.backend:backend",
}


def backend_names() -> list[str]:
    return list(_REGISTRY)


def get_backend(name: str) -> Backend:
    """The registered backend called `name`, imported on first use (keeps the CLI start fast)."""
    if name not in _REGISTRY:
        raise ValueError(f"Unknown backend {name!r}; available backends: {', '.join(_REGISTRY)}.")
    module_name, attribute = _REGISTRY[name].split(":")
    return getattr(importlib.import_module(module_name), attribute)


def backend_packages() -> list[str]:
    """The packages the registered backends live in (their source keys `shared.program_cache`)."""
    return list(dict.fromkeys(spec.split(".")[0] for spec in _REGISTRY.values()))
