"""The backend contract and registry: what a backend must provide, and how to get one by name.

Everything that is not the forward pass (weights I/O, sampling, the decode loop, the loss, the CLI) is
written once against this protocol.
"""

from __future__ import annotations

import importlib
from typing import Protocol, runtime_checkable

import jax
import jax.numpy as jnp

from shared.apply_options import ApplyOptions
from shared.config import GPT2Config
from shared.jax_types import PyTree
from shared.kv_cache import KVCache
from shared.params import Params


@runtime_checkable
class Backend(Protocol):
    """A GPT-2 implementation: how it holds parameters and how it runs the forward pass."""

    name: str

    def init(self, config: GPT2Config, key: jax.Array) -> PyTree:
        """Fresh GPT-2-initialised parameters in the backend's own format."""
        ...

    def from_canonical(self, tree: Params, config: GPT2Config) -> PyTree:
        """Canonical tree -> backend parameters (exact)."""
        ...

    def to_canonical(self, params: PyTree, config: GPT2Config) -> Params:
        """Backend parameters -> canonical tree (exact)."""
        ...

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
        ...

    def init_cache(self, config: GPT2Config, batch: int, max_len: int, dtype: jnp.dtype) -> KVCache:
        """An empty cache for `batch` rows of up to `max_len` token slots."""
        ...


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
