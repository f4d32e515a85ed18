"""Low-rank adaptation (LoRA): what every backend shares about adapters, written once.

A targeted projection `w` [in, out] is fine-tuned as `w + (alpha / rank) * a @ b` with `a`
[in, rank] and `b` [rank, out] the only trained tensors (Hu et al., 2021). `b` starts at zero, so
the first forward pass is exactly the base model's; `a` starts uniform in +-1/sqrt(in), as PEFT's
`kaiming_uniform_(a=sqrt(5))` draws it.

Canonical adapters sit beside the canonical tree's weights, stacked on the layer axis like them:
`blocks/attn/c_attn/{lora_a, lora_b}` beside `blocks/attn/c_attn/w`. A backend names them its own
way (`to_backend` / `from_backend` take its naming function) and adds them in its own idiom. The
effective weight is always `merged_weight`: Keras' own `Dense.enable_lora` forms it in each
forward; functional and Haiku train through `adapted`, which keeps the factors apart (cheaper to
differentiate, the same numbers up to rounding); loading and exporting merge it once (`merge`).
JAX is imported by the functions that compute, so `gpt2 train --help` and its flags' checks stay
light.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Hashable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from shared.config import GPT2Config
from shared.errors import GPT2Error
from shared.params import Params, flatten, unflatten

if TYPE_CHECKING:
    import jax

    from shared.jax_types import PyTree

TARGETS: dict[str, str] = {
    "c_attn": "attn/c_attn",
    "attn_c_proj": "attn/c_proj",
    "c_fc": "mlp/c_fc",
    "mlp_c_proj": "mlp/c_proj",
}
"""Target name -> the projection's path below `blocks/` (GPT-2's four per-layer matrices)."""

DEFAULT_TARGETS = ("c_attn",)
"""PEFT's default for GPT-2: the fused query/key/value projection."""

K = TypeVar("K", bound=Hashable)


@dataclasses.dataclass(frozen=True)
class LoraConfig:
    """Adapters of `rank` on each of `targets`, scaled by alpha / rank (hashable: a jit key)."""

    rank: int
    alpha: float
    targets: tuple[str, ...] = DEFAULT_TARGETS

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    def to_dict(self) -> dict[str, Any]:
        return {"rank": self.rank, "alpha": self.alpha, "targets": list(self.targets)}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> LoraConfig:
        return cls(values["rank"], values["alpha"], tuple(values["targets"]))


def parse_targets(text: str) -> tuple[str, ...]:
    """ "c_attn,mlp_c_proj" -> ("c_attn", "mlp_c_proj"); an unknown name is a one-sentence error."""
    names = tuple(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))
    unknown = [name for name in names if name not in TARGETS]
    if unknown or not names:
        hint = " (GPT-2 has two: attn_c_proj or mlp_c_proj)" if "c_proj" in unknown else ""
        raise GPT2Error(
            f"lora_targets must be a comma-separated list of {', '.join(TARGETS)}, got "
            f"{text!r}{hint}."
        )
    return names


def projection_shapes(config: GPT2Config) -> dict[str, tuple[int, int]]:
    """Target name -> the (in, out) of its weight in one layer."""
    d = config.n_embd
    return {
        "c_attn": (d, 3 * d),
        "attn_c_proj": (d, d),
        "c_fc": (d, 4 * d),
        "mlp_c_proj": (4 * d, d),
    }


def check(lora: LoraConfig, config: GPT2Config) -> None:
    """Refuse a rank outside 1..min(in, out) of a targeted projection, in one sentence."""
    shapes = projection_shapes(config)
    limit = min(min(shapes[target]) for target in lora.targets)
    if not 1 <= lora.rank <= limit:
        raise GPT2Error(
            f"lora_rank must be between 1 and {limit} (the smaller side of the targeted "
            f"{', '.join(lora.targets)} weights of a {config.n_embd}-wide model), got {lora.rank}."
        )


def adapter_shapes(lora: LoraConfig, config: GPT2Config) -> dict[str, tuple[int, ...]]:
    """Canonical adapter path -> shape, stacked on the layer axis like the weights."""
    shapes = {}
    for target in lora.targets:
        n_in, n_out = projection_shapes(config)[target]
        shapes[f"blocks/{TARGETS[target]}/lora_a"] = (config.n_layer, n_in, lora.rank)
        shapes[f"blocks/{TARGETS[target]}/lora_b"] = (config.n_layer, lora.rank, n_out)
    return shapes


def init_adapters(lora: LoraConfig, config: GPT2Config, key: jax.Array) -> Params:
    """Fresh canonical adapters: `a` uniform in +-1/sqrt(in) (PEFT's init), `b` zero."""
    import jax
    import jax.numpy as jnp

    flat = {}
    for path, shape in adapter_shapes(lora, config).items():
        key, draw = jax.random.split(key)
        if path.endswith("lora_a"):
            bound = 1.0 / shape[1] ** 0.5
            flat[path] = jax.random.uniform(draw, shape, jnp.float32, -bound, bound)
        else:
            flat[path] = jnp.zeros(shape, jnp.float32)
    return unflatten(flat)


def merged_weight(w: jax.Array, a: jax.Array, b: jax.Array, scale: float) -> jax.Array:
    """The effective weight w + scale * a @ b, in w's dtype (layer axes broadcast)."""
    import jax.numpy as jnp

    return (w + scale * jnp.matmul(a, b)).astype(w.dtype)


def merge(tree: PyTree, adapters: PyTree, scale: float) -> PyTree:
    """`tree` (canonical, stacked or with per-layer `blocks`) with every adapted `w` merged.

    `adapters` mirrors `tree` where it holds `{lora_a, lora_b}` beside a `w`.
    """
    return _replace_adapted(tree, adapters, lambda w, a, b: merged_weight(w, a, b, scale))


def adapted(tree: PyTree, adapters: PyTree, scale: float) -> PyTree:
    """`tree` as `merge` walks it, with every adapted `w` an `AdaptedWeight` of it and its
    factors instead of the merged array: what a LoRA training step multiplies by."""
    from shared.linear import AdaptedWeight

    return _replace_adapted(tree, adapters, lambda w, a, b: AdaptedWeight(w, a, b, scale))


def _replace_adapted(tree: PyTree, adapters: PyTree, replace: Callable[..., Any]) -> PyTree:
    """`tree` with each `w` that `adapters` adapts replaced by `replace(w, lora_a, lora_b)`."""
    if isinstance(adapters, Mapping) and "lora_a" in adapters:
        return {**tree, "w": replace(tree["w"], adapters["lora_a"], adapters["lora_b"])}
    if isinstance(adapters, Mapping):
        return {**tree, **{k: _replace_adapted(tree[k], v, replace) for k, v in adapters.items()}}
    return type(tree)(_replace_adapted(t, a, replace) for t, a in zip(tree, adapters, strict=True))


def to_backend(
    adapters: Params, config: GPT2Config, lora: LoraConfig, key_of: Callable[[int, str, str], K]
) -> dict[K, jax.Array]:
    """Canonical adapters -> `{backend key: array}`, one per layer; `key_of(layer, projection
    path below blocks/, "lora_a" | "lora_b")` is the backend's name for it."""
    flat = flatten(adapters)
    validate(adapters, lora, config)
    return {
        key_of(i, TARGETS[target], part): flat[f"blocks/{TARGETS[target]}/{part}"][i]
        for target in lora.targets
        for part in ("lora_a", "lora_b")
        for i in range(config.n_layer)
    }


def from_backend(
    values: Mapping[K, Any],
    config: GPT2Config,
    lora: LoraConfig,
    key_of: Callable[[int, str, str], K],
) -> Params:
    """Inverse of `to_backend`: `{backend key: array}` -> canonical adapters, layers stacked."""
    import jax.numpy as jnp

    flat = {
        f"blocks/{TARGETS[target]}/{part}": jnp.stack(
            [values[key_of(i, TARGETS[target], part)] for i in range(config.n_layer)]
        )
        for target in lora.targets
        for part in ("lora_a", "lora_b")
    }
    adapters = unflatten(flat)
    validate(adapters, lora, config)
    return adapters


def validate(adapters: Params, lora: LoraConfig, config: GPT2Config) -> None:
    """Refuse canonical adapters of other targets or shapes than `lora` gives `config`."""
    flat = flatten(adapters)
    expected = adapter_shapes(lora, config)
    if set(flat) != set(expected):
        raise GPT2Error(
            f"The adapters hold {', '.join(sorted(flat))}, but LoRA on {', '.join(lora.targets)} "
            f"needs {', '.join(sorted(expected))}."
        )
    for path, shape in expected.items():
        actual = tuple(np.shape(flat[path]))
        if actual != shape:
            raise GPT2Error(
                f"Adapter {path} has shape {actual}, but rank {lora.rank} needs {shape}."
            )


def base_digest(tree: Params) -> str:
    """sha256 of a canonical tree's paths, shapes, dtypes and values: which base adapters fit."""
    import jax

    digest = hashlib.sha256()
    for path, value in sorted(flatten(tree).items()):
        array = np.ascontiguousarray(jax.device_get(value))
        digest.update(f"{path}:{array.shape}:{array.dtype};".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()
