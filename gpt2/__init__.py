"""gpt2: the public face of gpt2-jax. Re-exports only; the logic lives in `shared/` and the backends.

The names are imported on first use, so `python -m gpt2` refuses a bad flag before JAX loads.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shared import beam_search
    from shared.api import GPT2, BeamText, from_canonical, load_checkpoint, load_model, main
    from shared.beam_search import BeamParams, Hypothesis
    from shared.config import MODEL_SIZES, GPT2Config
    from shared.generation import Completion, Generator
    from shared.sampling import SamplingParams
    from shared.scoring import TextScore
    from shared.tokenizer import Tokenizer

_SOURCES = {
    "GPT2": "shared.api", "BeamText": "shared.api", "from_canonical": "shared.api",
    "load_checkpoint": "shared.api", "load_model": "shared.api", "main": "shared.api",
    "BeamParams": "shared.beam_search", "Hypothesis": "shared.beam_search",
    "MODEL_SIZES": "shared.config", "GPT2Config": "shared.config",
    "Completion": "shared.generation", "Generator": "shared.generation",
    "SamplingParams": "shared.sampling", "TextScore": "shared.scoring",
    "Tokenizer": "shared.tokenizer",
}  # fmt: skip
"""Each re-exported name -> the module that defines it."""

__all__ = [
    "GPT2",
    "MODEL_SIZES",
    "BeamParams",
    "BeamText",
    "Completion",
    "GPT2Config",
    "Generator",
    "Hypothesis",
    "SamplingParams",
    "TextScore",
    "Tokenizer",
    "beam_search",
    "from_canonical",
    "load_checkpoint",
    "load_model",
    "main",
]


def __getattr__(name: str) -> Any:
    if name == "beam_search":
        value = importlib.import_module("shared.beam_search")
    elif name in _SOURCES:
        value = getattr(importlib.import_module(_SOURCES[name]), name)
    else:
        raise AttributeError(f"module 'gpt2' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
