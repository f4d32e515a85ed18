"""Inputs for checking the samplers against references (ours in `sampling_reference`, Hugging
Face's in the oracle), and the project's samplers run on them: random logit rows, named
settings, edge cases with the tokens each must keep, left-padded histories for the repetition
rules."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from shared.generation import apply_repeat_rules
from shared.kv_cache import KVCache
from shared.sampling import SamplingParams, warp_logits
from tests.support import sampling_reference as reference

VOCAB = 48
INF = float("inf")

SETTINGS = {
    "temperature 0.7": SamplingParams(0.7),
    "top-k 5": SamplingParams(top_k=5),
    "top-k 1": SamplingParams(top_k=1),
    "top-k = vocabulary": SamplingParams(top_k=VOCAB),
    "top-k past int32": SamplingParams(top_k=10**12),
    "top-p 0.3": SamplingParams(top_p=0.3),
    "top-p 0.9, temperature 1.3": SamplingParams(1.3, top_p=0.9),
    "top-p 1": SamplingParams(top_p=1.0),
    "top-k 10 + top-p 0.8, temperature 0.5": SamplingParams(0.5, top_k=10, top_p=0.8),
    "top-p 0.9, temperature 1e-4": SamplingParams(1e-4, top_p=0.9),
    "top-k 20 + top-p 0.5, temperature 1e4": SamplingParams(1e4, top_k=20, top_p=0.5),
}
"""Settings to run on `random_rows`: each filter alone, at its extremes, and composed."""


class EdgeCase(NamedTuple):
    logits: tuple[float, ...]
    params: SamplingParams
    kept: frozenset[int]
    """The tokens that must survive, worked out by hand from the definitions."""


DYADIC = tuple(np.log([1.0, 0.5, 0.25, 0.25]).tolist())
"""Probabilities 1/2, 1/4, 1/8, 1/8 whose exponentials are exact in float64 and, rounded to
float32, in float32 too, so the mass above a token can equal top_p exactly in both."""
TIES = (3.0, 1.0, 3.0, 0.0, 3.0, -INF, 1.0)
FLOAT32_NEAR_ONE = 1 - 2**-13  # exact in float32, so both sides scale the same gap

EDGE_CASES = {
    "top-k 2, three tied first": EdgeCase(TIES, SamplingParams(top_k=2), frozenset({0, 2, 4})),
    "top-k 4, a tie at the 4th": EdgeCase(
        TIES, SamplingParams(top_k=4), frozenset({0, 1, 2, 4, 6})
    ),
    "top-k 1, a tied maximum": EdgeCase(
        (2.0, 5.0, 5.0, 1.0), SamplingParams(top_k=1), frozenset({1, 2})
    ),
    "top-k past the vocabulary": EdgeCase(
        TIES, SamplingParams(top_k=10**6), frozenset({0, 1, 2, 3, 4, 6})
    ),
    "top-k past the finite logits": EdgeCase(
        (1.0, -INF, 0.0, -INF), SamplingParams(top_k=3), frozenset({0, 2})
    ),
    "top-p 0.5, reached by the first token": EdgeCase(
        DYADIC, SamplingParams(top_p=0.5), frozenset({0})
    ),
    "top-p 0.75, reached exactly by two": EdgeCase(
        DYADIC, SamplingParams(top_p=0.75), frozenset({0, 1})
    ),
    "top-p just above 0.75, reached in a tie": EdgeCase(
        DYADIC, SamplingParams(top_p=float(np.nextafter(np.float32(0.75), 1))), frozenset(range(4))
    ),
    "top-p 0.875, reached by half a tie": EdgeCase(
        DYADIC, SamplingParams(top_p=0.875), frozenset(range(4))
    ),
    "top-p 0.5 with -inf present": EdgeCase(
        (0.0, -INF, 0.0, -1.0), SamplingParams(top_p=0.5), frozenset({0, 2})
    ),
    "top-p 1, temperature 1e-4": EdgeCase(
        (0.0, -1.0, -2.0, -50.0), SamplingParams(1e-4, top_p=1.0), frozenset(range(4))
    ),
    "top-p 0.9, temperature 1e-4": EdgeCase(
        (1.0, FLOAT32_NEAR_ONE, 0.5, -2.0), SamplingParams(1e-4, top_p=0.9), frozenset({0, 1})
    ),
    "top-p 0.5, temperature 1e4": EdgeCase(
        (10.0, 0.0, -10.0, -20.0), SamplingParams(1e4, top_p=0.5), frozenset({0, 1})
    ),
    "top-k 2 + top-p 0.6, a tie at the 2nd": EdgeCase(
        tuple(np.log([3.0, 1.0, 1.0, 1.0, 0.01]).tolist()),
        SamplingParams(top_k=2, top_p=0.6),
        frozenset(range(4)),
    ),
}
"""Ties at the top-k boundary and at the top-p threshold, top-p reached exactly, k past the
vocabulary, extreme temperatures, -inf already present."""


def random_rows(seed: int, rows: int = 64, tied: bool = False) -> np.ndarray:
    """[rows, VOCAB] float32 logits at scales from nearly flat to nearly one-hot; about one in
    twenty is already -inf (never token 0, so every row keeps a finite logit). `tied` rounds them
    to multiples of 1/2, so that many tie, at the filters' thresholds too."""
    rng = np.random.default_rng(seed)
    scales = rng.choice([0.3, 1.0, 3.0, 10.0], rows)[:, None]
    logits = rng.standard_normal((rows, VOCAB)) * scales
    if tied:
        logits = np.round(logits * 2) / 2
    ruled_out = rng.random((rows, VOCAB)) < 0.05
    ruled_out[:, 0] = False
    return np.where(ruled_out, -np.inf, logits).astype(np.float32)


class Histories(NamedTuple):
    """Left-padded sequences as the decode loop holds them: `ids` [rows, slots], of which
    `valid` marks each row's sequence (from its padding up to `end`; later slots hold stale ids).
    """

    ids: np.ndarray
    valid: np.ndarray
    end: int

    def sequence(self, row: int) -> list[int]:
        return self.ids[row, self.valid[row]].tolist()


def random_histories(seed: int, rows: int = 64, slots: int = 24, end: int = 19) -> Histories:
    """Sequences over the first 6 token ids, so n-grams recur, behind up to 7 pads."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, 6, (rows, slots))
    pads = rng.integers(0, 8, rows)
    position = np.arange(slots)[None]
    return Histories(ids, (position >= pads[:, None]) & (position < end), end)


PROMPT_SLOTS = 16
"""Where `processed` splits a history into the prompt and the output, as the decode loop holds
them."""

_warp = jax.jit(warp_logits)


def repeat_ruled(
    logits: np.ndarray, params: SamplingParams, histories: Histories | None
) -> jax.Array:
    """`logits` [rows, vocab] after the decode loop's repetition rules over `histories` (none
    without them): what the project's `sample` is given."""
    scores = jnp.asarray(logits, jnp.float32)
    if histories is None:
        return scores
    ids, valid = jnp.asarray(histories.ids), jnp.asarray(histories.valid)
    cache = KVCache(k=(), v=(), mask=valid, index=jnp.int32(histories.end))
    return apply_repeat_rules(
        scores, cache, ids[:, :PROMPT_SLOTS], ids[:, PROMPT_SLOTS:],
        jnp.float32(params.repetition_penalty), params.no_repeat_ngram_size,
    )  # fmt: skip


def processed(
    logits: np.ndarray, params: SamplingParams, histories: Histories | None = None
) -> np.ndarray:
    """The logits the project's sampler draws from: `repeat_ruled`, then `warp_logits`."""
    return np.asarray(_warp(repeat_ruled(logits, params, histories), *params.as_arrays()))


BOUNDARY = 1e-6
"""A token whose more likely tokens hold top_p to within this may be kept or not: float32
rounding decides."""


def float32_settings(params: SamplingParams) -> tuple[float, int | None, float, float]:
    """(temperature, top_k or None, top_p, repetition_penalty) as the float32 values the project's
    sampler is given, for a reference to start from the same numbers."""
    temperature, top_k, top_p = params.as_arrays()
    penalty = np.float32(params.repetition_penalty)
    return float(temperature), int(top_k) or None, float(top_p), float(penalty)


def reference_rows(
    logits: np.ndarray, params: SamplingParams, histories: Histories | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The reference's counterpart of `processed` ([rows, vocab] float64), and where a token lies
    within `BOUNDARY` of the top-p threshold."""
    temperature, top_k, top_p, penalty = float32_settings(params)
    expected, near_boundary = [], []
    for row, row_logits in enumerate(np.asarray(logits, np.float64)):
        if histories is not None:
            sequence = histories.sequence(row)
            row_logits = reference.repeat_rules(
                row_logits, sequence, penalty, params.no_repeat_ngram_size
            )
        before_top_p = reference.warp(row_logits, temperature, top_k, 1.0)
        expected.append(reference.top_p(before_top_p, top_p))
        mass = reference.mass_above(before_top_p)
        near_boundary.append((top_p < 1) & (np.abs(mass - top_p) < BOUNDARY))
    return np.array(expected), np.array(near_boundary)
