"""Model shapes: the GPT2Config dataclass and OpenAI's four released sizes."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any


@dataclasses.dataclass(frozen=True)
class GPT2Config:
    """Hyper-parameters of a GPT-2 network, named as in OpenAI's `hparams.json`.

    Frozen (hashable) so it can be a static argument of `jax.jit`.
    """

    n_embd: int = 768
    n_head: int = 12
    n_layer: int = 12
    n_vocab: int = 50257
    n_ctx: int = 1024
    ln_eps: float = 1e-5

    def __post_init__(self) -> None:
        for name in ("n_embd", "n_head", "n_layer", "n_vocab", "n_ctx"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"GPT2Config.{name} must be a positive integer, got {value!r}.")
        if self.n_embd % self.n_head:
            raise ValueError(
                f"GPT2Config.n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})."
            )

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def n_params(self) -> int:
        """Parameter count with the output projection tied to `wte` (124,439,808 for 124M)."""
        d, layer = self.n_embd, 12 * self.n_embd**2 + 13 * self.n_embd
        return self.n_vocab * d + self.n_ctx * d + self.n_layer * layer + 2 * d

    def to_hparams(self) -> dict[str, Any]:
        """The dict OpenAI stores as `hparams.json` (plus `ln_eps` when it is not the default)."""
        hparams: dict[str, Any] = {
            "n_vocab": self.n_vocab,
            "n_ctx": self.n_ctx,
            "n_embd": self.n_embd,
            "n_head": self.n_head,
            "n_layer": self.n_layer,
        }
        if self.ln_eps != 1e-5:
            hparams["ln_eps"] = self.ln_eps
        return hparams

    @classmethod
    def from_hparams(cls, hparams: dict[str, Any]) -> GPT2Config:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(hparams) - known)
        if unknown:
            raise ValueError(
                f"Unknown GPT-2 hyper-parameter(s) {unknown}; allowed: {sorted(known)}."
            )
        return cls(**hparams)

    @classmethod
    def from_json_file(cls, path: str | Path) -> GPT2Config:
        return cls.from_hparams(json.loads(Path(path).read_text()))


MODEL_SIZES: dict[str, GPT2Config] = {
    "124M": GPT2Config(n_embd=768, n_head=12, n_layer=12),
    "355M": GPT2Config(n_embd=1024, n_head=16, n_layer=24),
    "774M": GPT2Config(n_embd=1280, n_head=20, n_layer=36),
    "1558M": GPT2Config(n_embd=1600, n_head=25, n_layer=48),
}

SIZE_ALIASES: dict[str, str] = {
    "gpt2": "124M",
    "gpt2-medium": "355M",
    "gpt2-large": "774M",
    "gpt2-xl": "1558M",
}


def check_tokens(shape: tuple, n_ctx: int) -> None:
    """Refuse token arrays that every backend's forward calls on and would get wrong: not
    [batch, seq], no positions, or more positions than the model has (their embedding lookups
    would give NaN). A length that is not an int (symbolic, as Keras builds with) passes."""
    if len(shape) != 2:
        raise ValueError(f"Tokens must be a [batch, seq] array, got shape {tuple(shape)}.")
    n_tokens = shape[1]
    if isinstance(n_tokens, int) and n_tokens < 1:
        raise ValueError(f"Tokens of shape {tuple(shape)} hold no positions; give at least one.")
    if isinstance(n_tokens, int) and n_tokens > n_ctx:
        raise ValueError(
            f"A sequence of {n_tokens} tokens exceeds the model's context of {n_ctx} positions; "
            f"give at most {n_ctx}."
        )


def resolve_model_size(name: str) -> str:
    """Map a size or alias (`"355M"`, `"gpt2-medium"`) to OpenAI's size name, or fail clearly."""
    key = name.strip()
    for size in MODEL_SIZES:
        if key.upper() == size:
            return size
    if key.lower() in SIZE_ALIASES:
        return SIZE_ALIASES[key.lower()]
    valid = ", ".join([*MODEL_SIZES, *SIZE_ALIASES])
    raise ValueError(f"Unknown model size {name!r}; valid sizes are: {valid}.")


def config_for_size(name: str | GPT2Config) -> GPT2Config:
    """A named size's config; a config passes through (benchmarks and tests bring their own)."""
    return name if isinstance(name, GPT2Config) else MODEL_SIZES[resolve_model_size(name)]
