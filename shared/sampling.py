"""Pure, jittable next-token sampling: a repetition penalty, temperature (0 = greedy), top-k and
top-p, composable.

The settings are traced values, not static ones, so changing them never recompiles. Each row draws
with its own PRNG key, so a row's tokens do not depend on which other rows share its batch.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any, TypedDict

import jax
import jax.numpy as jnp
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


def penalize_repeats(logits: jax.Array, seen: jax.Array, penalty: jax.Array) -> jax.Array:
    """Divide the positive logits of the `seen` tokens by `penalty` and multiply the negative ones
    by it, so a penalty above 1 makes each less likely whatever its sign (CTRL, Keskar et al.
    2019; Hugging Face's `RepetitionPenaltyLogitsProcessor`). logits, seen: [batch, vocab]."""
    logits = logits.astype(jnp.float32)
    penalized = jnp.where(logits > 0, logits / penalty, logits * penalty)
    return jnp.where(seen, penalized, logits)


def token_set(ids: jax.Array, where: jax.Array, vocab: int) -> jax.Array:
    """[batch, vocab] bool: which ids each row holds at the slots `where` marks. ids, where:
    [batch, slots]."""
    rows = jnp.arange(ids.shape[0])[:, None]
    return jnp.zeros((ids.shape[0], vocab), bool).at[rows, ids].max(where)


def ngram_completions(
    history: jax.Array, valid: jax.Array, end: jax.Array, n: int, vocab: int
) -> jax.Array:
    """The tokens that would repeat an n-gram, [batch, vocab] bool (Hugging Face's
    `no_repeat_ngram_size`): each token that followed the sequence's last n - 1 tokens earlier in it.

    history: [batch, slots] token ids; the sequence is the `valid` slots (not left padding) of
    [0, end), and `valid` is False from `end` on. An n-gram must lie wholly in it; with n = 1
    every token in it is banned.
    """
    batch, slots = history.shape
    if n > slots:  # longer than any sequence these slots hold
        return jnp.zeros((batch, vocab), bool)
    suffix_start = end - (n - 1)
    suffix = jax.lax.dynamic_slice_in_dim(history, suffix_start, n - 1, axis=1)
    suffix_held = jax.lax.dynamic_slice_in_dim(valid, suffix_start, n - 1, axis=1).all(axis=1)
    starts = slots - n + 1
    match = jnp.broadcast_to((suffix_start >= 0) & suffix_held[:, None], (batch, starts))
    for offset in range(n):
        match = match & valid[:, offset : offset + starts]
        if offset < n - 1:
            match = match & (history[:, offset : offset + starts] == suffix[:, offset, None])
    return token_set(history[:, n - 1 :], match, vocab)


def _ordered_keys(x: jax.Array) -> jax.Array:
    """uint32 keys that sort like the float values of `x` (-0.0 and 0.0 share one key)."""
    bits = jax.lax.bitcast_convert_type(jnp.where(x == 0, 0.0, x), jnp.uint32)
    return jnp.where(bits >> 31 == 1, ~bits, bits | jnp.uint32(1 << 31))


def _smallest_key_where(holds: Callable, lo: jax.Array, hi: jax.Array) -> jax.Array:
    """Per row, the smallest key t in [lo, hi] for which `holds(t)` (monotone, true at hi).

    32 halvings cover every uint32 key, so the answer is exact.
    """

    def halve(_: int, bounds: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
        lo, hi = bounds
        mid = lo + (hi - lo) // 2
        ok = holds(mid[:, None])
        return jnp.where(ok, lo, mid + 1), jnp.where(ok, mid, hi)

    return jax.lax.fori_loop(0, 32, halve, (lo, hi))[1]


def filter_logits(logits: jax.Array, top_k: jax.Array, top_p: jax.Array) -> jax.Array:
    """Set to -inf every logit outside the top-k and then the top-p set. logits: [batch, vocab].

    Ties at the threshold are kept, so with equal logits the set can exceed k. Top-p weighs the
    probabilities of everything top-k keeps, ties included, so the two filters compose as if run
    one after the other. The thresholds are found by bisection over the exact float values instead
    of a sort: sorting 50,257 logits per row took a large share of a CPU decode step, while each
    of the 32 bisection passes is one fused reduction.
    """
    vocab = logits.shape[-1]
    keys = _ordered_keys(logits)
    lowest, highest = keys.min(axis=-1), keys.max(axis=-1)
    k = jnp.where(top_k > 0, jnp.minimum(top_k, vocab), vocab)
    # The k-th largest value: the smallest t with fewer than k logits above it.
    kth = jax.lax.cond(
        top_k > 0,
        lambda: _smallest_key_where(lambda t: jnp.sum(keys > t, axis=-1) < k, lowest, highest),
        lambda: lowest,
    )

    def nucleus_threshold() -> jax.Array:
        # Probabilities over every token top-k keeps, its ties at the k-th value included.
        weights = jnp.exp(logits - jnp.max(logits, axis=-1, keepdims=True))
        total = jnp.sum(jnp.where(keys >= kth[:, None], weights, 0.0), axis=-1)
        # The smallest value whose higher-ranked mass is still below top_p is the last one kept.
        return _smallest_key_where(
            lambda t: jnp.sum(jnp.where(keys > t, weights, 0.0), axis=-1) < top_p * total,
            kth,
            highest,
        )

    threshold = jax.lax.cond(top_p < 1, nucleus_threshold, lambda: kth)
    return jnp.where(keys >= threshold[:, None], logits, -jnp.inf)


def warp_logits(
    logits: jax.Array, temperature: jax.Array, top_k: jax.Array, top_p: jax.Array
) -> jax.Array:
    """The logits a draw samples from, for a temperature above 0: divided by the temperature,
    then filtered to the top-k and the top-p set (`filter_logits`). logits: [batch, vocab].

    Public so that tests can compare what a draw samples from, not only the draws, with
    independent references.
    """
    # Shifted to a maximum of 0 first: a tiny temperature then sends the others to -inf,
    # not every logit (GPT-2's are negative), which would leave token 0.
    scaled = (logits - logits.max(axis=-1, keepdims=True)) / temperature
    return jax.lax.cond(
        (top_k > 0) | (top_p < 1),
        lambda x: filter_logits(x, top_k, top_p),
        lambda x: x,
        scaled,
    )


def sample(
    logits: jax.Array,
    keys: jax.Array,
    temperature: jax.Array,
    top_k: jax.Array,
    top_p: jax.Array,
) -> jax.Array:
    """One token id per row. logits: [batch, vocab]; keys: [batch] PRNG keys (one per row)."""
    logits = logits.astype(jnp.float32)

    def draw(logits: jax.Array) -> jax.Array:
        warped = warp_logits(logits, temperature, top_k, top_p)
        return jax.vmap(jax.random.categorical)(keys, warped)

    def greedy(logits: jax.Array) -> jax.Array:
        return jnp.argmax(logits, axis=-1)

    return jax.lax.cond(temperature > 0, draw, greedy, logits).astype(jnp.int32)
