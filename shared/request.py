"""A text generation request as it enters the library: prompts, how many tokens, the sampling
settings, stop strings, seed and samples per prompt, checked once, here.

`GPT2.generate`, `stream` and `beam_search` build one from their arguments and serve it with
`generate_request`, `stream_request` and `beam_search_request`; `gpt2 generate` builds its request
before it loads a model, so a request no model could serve fails in one sentence before any
download, and hands that same request to those methods. What depends on the model (a prompt longer than its context, an empty prompt
to a model without `<|endoftext|>`) is checked when it runs. The token-level entries
(`Generator.stream`, `beam_search.search`) check their own arguments with the same functions.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from shared.numeric import is_integer
from shared.sampling_params import SamplingParams

_DEFAULT_SAMPLING = SamplingParams()
"""Greedy decoding; frozen, so one default serves every request."""


@dataclasses.dataclass(frozen=True, init=False)
class Request:
    """What to generate. `prompts` and `stop` may be one string or several; `seed` None draws a
    fresh one per call; `truncate` lets prompt + new tokens exceed the context (`GPT2.stream`)."""

    prompts: tuple[str, ...]
    max_new_tokens: int
    sampling: SamplingParams
    stop: tuple[str, ...]
    seed: int | None
    num_samples: int
    truncate: bool

    def __init__(
        self,
        prompts: str | Sequence[str],
        max_new_tokens: int,
        sampling: SamplingParams = _DEFAULT_SAMPLING,
        stop: str | Sequence[str] | None = (),
        seed: int | None = None,
        num_samples: int = 1,
        truncate: bool = False,
    ) -> None:
        # The fields as given, then checked and normalised (one string -> a tuple of one).
        object.__setattr__(self, "prompts", prompts)
        object.__setattr__(self, "max_new_tokens", max_new_tokens)
        object.__setattr__(self, "sampling", sampling)
        object.__setattr__(self, "stop", stop)
        object.__setattr__(self, "seed", seed)
        object.__setattr__(self, "num_samples", num_samples)
        object.__setattr__(self, "truncate", truncate)
        self._check(prompts, stop)

    def _check(
        self, given_prompts: str | Sequence[str], given_stop: str | Sequence[str] | None
    ) -> None:
        prompts = _strings(given_prompts)
        stop = _strings(given_stop or ())
        check_max_new_tokens(self.max_new_tokens)
        bad = next((p for p in prompts if not isinstance(p, str)), None)
        if bad is not None:
            raise ValueError(f"Prompts are text to continue, got {bad!r}.")
        if not is_integer(self.num_samples) or self.num_samples < 1:
            raise ValueError(f"num_samples must be an integer >= 1, got {self.num_samples!r}.")
        if "" in stop:
            raise ValueError("A stop string is empty; give text to stop before, or no --stop.")
        bad = next((s for s in stop if not isinstance(s, str)), None)
        if bad is not None:
            raise ValueError(f"Stop strings are text to stop before, got {bad!r}.")
        if self.seed is not None:
            check_seed(self.seed)
        # Numpy counts and seeds become Python ints, as SamplingParams' settings do.
        object.__setattr__(self, "prompts", prompts)
        object.__setattr__(self, "stop", stop)
        object.__setattr__(self, "max_new_tokens", int(self.max_new_tokens))
        object.__setattr__(self, "num_samples", int(self.num_samples))
        object.__setattr__(self, "seed", None if self.seed is None else int(self.seed))


def _strings(given: str | Sequence[str]) -> tuple[str, ...]:
    return (given,) if isinstance(given, str) else tuple(given)


def check_max_new_tokens(max_new_tokens: int) -> None:
    if not is_integer(max_new_tokens) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be an integer >= 1, got {max_new_tokens!r}.")


def check_seed(seed: int) -> None:
    """PRNG keys are made from the seed's signed 64 bits."""
    if not (is_integer(seed) and -(2**63) <= seed < 2**63):
        raise ValueError(f"seed must be an integer in [-2**63, 2**63), got {seed!r}.")
