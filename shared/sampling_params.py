"""How to pick the next token, as a request gives it: the settings and their checks, without JAX,
so a command refuses a bad setting before the model's libraries load. `shared.sampling` applies
them."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, TypedDict

import numpy as np

from shared.numeric import is_integer, is_real


@dataclasses.dataclass(frozen=True)
class SamplingParams:
    """How to pick the next token.

    temperature: 0 picks the most likely token (greedy); higher flattens the distribution.
    top_k: keep only the k most likely tokens (None = all).
    top_p: keep the smallest set of most likely tokens whose probability reaches top_p (1 = all).
    repetition_penalty: weigh down every token already in the prompt or the output, as Hugging
        Face's `repetition_penalty` (CTRL's): > 1 discourages repeats, 1 = off. GPT-2's greedy
        output otherwise tends to loop.
    no_repeat_ngram_size: never complete an n-gram of this many tokens that the prompt or the
        output already holds, as Hugging Face's `no_repeat_ngram_size` (0 = off). Unlike the
        others it is compiled in: each size is its own decode program.
    """

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0

    def __post_init__(self) -> None:
        if not (is_real(self.temperature) and math.isfinite(self.temperature)) or (
            self.temperature < 0
        ):
            raise ValueError(
                f"temperature must be a finite number >= 0 (0 = greedy), got {self.temperature!r}."
            )
        if self.top_k is not None and (not is_integer(self.top_k) or self.top_k < 1):
            raise ValueError(f"top_k must be an integer >= 1 (or unset), got {self.top_k!r}.")
        if not (is_real(self.top_p) and 0 < self.top_p <= 1):
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p!r}.")
        check_repeat_rules(self.repetition_penalty, self.no_repeat_ngram_size)
        # Numpy scalars become Python numbers, so equal settings compare and hash alike.
        object.__setattr__(self, "temperature", float(self.temperature))
        object.__setattr__(self, "top_k", None if self.top_k is None else int(self.top_k))
        object.__setattr__(self, "top_p", float(self.top_p))
        object.__setattr__(self, "repetition_penalty", float(self.repetition_penalty))
        object.__setattr__(self, "no_repeat_ngram_size", int(self.no_repeat_ngram_size))

    def as_arrays(self) -> tuple[np.float32, np.int32, np.float32]:
        """The draw's settings for `sample`: (temperature, top_k with 0 meaning off, top_p) as
        host scalars, traced once passed to a jitted function (host values, so building them
        compiles nothing). The repetition penalty applies before the draw (`penalize_repeats`)."""
        top_k = min(self.top_k or 0, np.iinfo(np.int32).max)  # any k past the vocabulary keeps all
        return np.float32(self.temperature), np.int32(top_k), np.float32(self.top_p)


class SamplingKeywords(TypedDict, total=False):
    """`SamplingParams`' fields as keywords, as `GPT2.generate`, `stream` and `main` take them."""

    temperature: float
    top_k: int | None
    top_p: float
    repetition_penalty: float
    no_repeat_ngram_size: int


def sampling_from(
    sampling: SamplingParams | None,
    keywords: Mapping[str, Any],
    default: SamplingParams | None = None,
) -> SamplingParams:
    """The settings a call gives, either as `sampling` or as keywords that change `default`
    (`SamplingParams()` unless given)."""
    unknown = [name for name in keywords if name not in SamplingKeywords.__annotations__]
    if unknown:
        raise TypeError(
            f"Unexpected keyword argument {unknown[0]!r}; the sampling settings are "
            f"{', '.join(SamplingKeywords.__annotations__)}."
        )
    if sampling is None:
        return dataclasses.replace(default or SamplingParams(), **keywords)
    if not isinstance(sampling, SamplingParams):
        raise TypeError(f"sampling must be a SamplingParams (or None), got {sampling!r}.")
    if keywords:
        raise ValueError(
            f"Give the sampling settings either as sampling=SamplingParams(...) or as keywords "
            f"({', '.join(keywords)}), not both."
        )
    return sampling


def check_repeat_rules(repetition_penalty: float, no_repeat_ngram_size: int) -> None:
    """Fail with one sentence on a repetition penalty not above 0 or a negative n-gram size."""
    penalty = repetition_penalty
    if not (is_real(penalty) and math.isfinite(penalty) and penalty > 0):
        raise ValueError(
            "repetition_penalty must be a finite number > 0 (1 = off, above 1 discourages "
            f"repeats), got {penalty!r}."
        )
    if not is_integer(no_repeat_ngram_size) or no_repeat_ngram_size < 0:
        raise ValueError(
            f"no_repeat_ngram_size must be an integer >= 0 (0 = off), got {no_repeat_ngram_size!r}."
        )
