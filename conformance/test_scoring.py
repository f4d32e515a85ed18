"""Scoring text over sliding windows (`gpt2 score`): every backend gives the reference's
log-probability for every token."""

from __future__ import annotations

import jax
import numpy as np

from conformance.conftest import TINY, canonical_tree, compared_with_reference
from conformance.report import max_abs_diff
from shared.scoring import Scorer

TOLERANCE = 1e-5


def score(backend, config, ids, stride):
    params = backend.from_canonical(canonical_tree(config), config)
    return Scorer(backend, params, config).log_probs(ids, stride, batch_size=2)


@compared_with_reference
def test_sliding_window_scores_match_the_reference(backend, reference, report):
    ids = jax.random.randint(jax.random.PRNGKey(6), (3 * TINY.n_ctx,), 0, TINY.n_vocab).tolist()
    got, expected = (score(b, TINY, ids, stride=48) for b in (backend, reference))
    assert got.shape == expected.shape == (len(ids) - 1,)
    assert np.all(np.isfinite(got))
    diff = max_abs_diff(got, expected)
    report.check("token log-probs over sliding windows vs functional", backend.name, "tiny", diff,
                 TOLERANCE)  # fmt: skip
