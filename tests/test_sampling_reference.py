"""The samplers against sort-based references written from the definitions
(`tests.support.sampling_reference`): the tokens each setting keeps and the probabilities it
leaves, on random rows and on ties, exact boundaries and extreme settings; and seeded draws, which
must never leave the reference's set and must fit its probabilities."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from shared.sampling import SamplingParams, sample
from tests.support import sampling_reference as reference
from tests.support.sampling_cases import (
    DYADIC,
    EDGE_CASES,
    INF,
    SETTINGS,
    Histories,
    processed,
    random_histories,
    random_rows,
    reference_rows,
    repeat_ruled,
)

PROBABILITY_TOLERANCE = 1e-6


def _assert_matches(ours: np.ndarray, expected: np.ndarray, near_boundary: np.ndarray) -> None:
    """The same tokens kept in every row (but where rounding at the top-p threshold decides), and
    in the rows that keep the same ones, the same probabilities."""
    differ = np.isfinite(ours) != np.isfinite(expected)
    unexplained = differ & ~near_boundary
    assert not unexplained.any(), {
        row: np.flatnonzero(tokens).tolist()
        for row, tokens in enumerate(unexplained)
        if any(tokens)
    }
    same = ~differ.any(axis=1)
    assert same.mean() > 0.9  # near-boundary tokens are rare; most rows are compared in full
    for row in np.flatnonzero(same):
        np.testing.assert_allclose(
            reference.probabilities(ours[row]), reference.probabilities(expected[row]),
            rtol=0, atol=PROBABILITY_TOLERANCE, err_msg=f"row {row}",
        )  # fmt: skip


@pytest.mark.parametrize("tied", [False, True], ids=["distinct", "tied"])
@pytest.mark.parametrize("setting", list(SETTINGS))
def test_processed_logits_match_the_reference_on_random_rows(setting, tied):
    logits = random_rows(seed=len(setting), tied=tied)
    _assert_matches(
        processed(logits, SETTINGS[setting]), *reference_rows(logits, SETTINGS[setting])
    )


@pytest.mark.parametrize("case", list(EDGE_CASES))
def test_edge_cases_keep_the_tokens_worked_out_by_hand(case):
    """Exact ties and exact sums: the project's float32 row and the reference's float64 one must
    both keep exactly the hand-made set, with no allowance at the boundary."""
    logits, params, kept = EDGE_CASES[case]
    ours = processed(np.asarray([logits], np.float32), params)
    expected, _ = reference_rows(np.asarray([logits]), params)
    assert set(np.flatnonzero(np.isfinite(ours[0])).tolist()) == kept
    assert set(np.flatnonzero(np.isfinite(expected[0])).tolist()) == kept
    _assert_matches(ours, expected, np.zeros_like(ours, bool))


def test_the_dyadic_rows_exponentials_are_exact_in_float32_and_float64():
    """What makes top-p's sums exact in both the edge cases that use them."""
    weights = [1.0, 0.5, 0.25, 0.25]
    assert np.exp(np.asarray(DYADIC)).tolist() == weights
    assert jnp.exp(jnp.asarray(DYADIC, jnp.float32)).tolist() == weights


@pytest.mark.parametrize("n", [0, 1, 2, 3])
@pytest.mark.parametrize("penalty", [0.7, 1.3, 2.0])
def test_repeat_rules_match_the_reference_on_left_padded_rows(penalty, n):
    params = SamplingParams(repetition_penalty=penalty, no_repeat_ngram_size=n)
    logits, histories = random_rows(seed=n), random_histories(seed=n)
    ours = processed(logits, params, histories)
    _assert_matches(ours, *reference_rows(logits, params, histories))


def test_every_rule_composed_matches_the_reference():
    params = SamplingParams(
        0.8, top_k=12, top_p=0.9, repetition_penalty=1.5, no_repeat_ngram_size=2
    )
    logits, histories = random_rows(seed=7), random_histories(seed=7)
    ours = processed(logits, params, histories)
    _assert_matches(ours, *reference_rows(logits, params, histories))


DRAWS = 20_000
ALPHA = 1e-6
"""A fit this unlikely under the reference's probabilities fails the chi-square test; the draws
are seeded, so the outcome is fixed."""
ROW = (2.0, 1.5, 1.0, 0.5, 0.0, -0.5, -1.0, -INF)
DRAW_CASES = {
    "temperature 1": (ROW, SamplingParams(1.0), None),
    "top-k 3 at temperature 0.6, a tie at the 3rd": (
        (2.0, 1.0, 1.5, 1.0, 0.0, 1.0, -1.0, -INF), SamplingParams(0.6, top_k=3), None,
    ),
    "top-p 0.8 reached inside a tie": (
        (1.0, 0.5, 0.5, 0.0, 0.0, -1.0, -2.0, -INF), SamplingParams(top_p=0.8), None,
    ),
    "top-k 4 + top-p 0.9 at temperature 1.5": (ROW, SamplingParams(1.5, top_k=4, top_p=0.9), None),
    "repetition penalty 3 + bigram bans, top-p 0.95": (
        ROW,
        SamplingParams(top_p=0.95, repetition_penalty=3.0, no_repeat_ngram_size=2),
        Histories(np.asarray([[0, 1, 4, 0, 2, 3, 0] + [5] * 17]), np.arange(24)[None] < 7, 7),
    ),
}  # fmt: skip
"""Small-vocabulary rows whose kept tokens are each likely enough to be counted."""

_sample = jax.jit(sample)


@pytest.mark.parametrize("case", list(DRAW_CASES))
def test_draws_stay_in_the_reference_set_and_fit_its_probabilities(case):
    row, params, histories = DRAW_CASES[case]
    logits = np.asarray([row], np.float32)
    expected, _ = reference_rows(logits, params, histories)
    kept = np.flatnonzero(np.isfinite(expected[0]))
    probabilities = reference.probabilities(expected[0])
    scores = jnp.broadcast_to(repeat_ruled(logits, params, histories), (DRAWS, len(row)))
    keys = jax.random.split(jax.random.PRNGKey(0), DRAWS)
    draws = np.asarray(_sample(scores, keys, *params.as_arrays()))
    assert set(draws.tolist()) <= set(kept.tolist())
    counts = np.bincount(draws, minlength=len(row))[kept]
    expected_counts = DRAWS * probabilities[kept]
    assert expected_counts.min() >= 5  # the chi-square test's usual validity condition
    assert stats.chisquare(counts, expected_counts).pvalue > ALPHA
