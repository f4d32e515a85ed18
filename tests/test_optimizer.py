"""The shared optimizer's own rules, against numbers worked out by hand: the learning rate's
warmup and cosine decay, and which parameters get weight decay in every backend."""

from __future__ import annotations

import functools

import jax
import pytest

from shared.backend import backend_names, get_backend
from shared.config import GPT2Config
from shared.training.config import TrainingConfig
from shared.training.optimizer import decay_mask, learning_rate_schedule

DECAYED = {"w", "kernel", "embeddings", "wte", "wpe"}
"""The parameter names of matrices and embeddings, in the three backends' trees."""


def test_the_schedule_warms_up_linearly_peaks_at_warmup_iters_and_decays_to_min_lr():
    config = TrainingConfig(learning_rate=1e-3, min_lr=1e-4, warmup_iters=10, max_iters=110)
    schedule = learning_rate_schedule(config)
    assert float(schedule(0)) == 0.0
    assert float(schedule(5)) == pytest.approx(5e-4)
    assert float(schedule(10)) == pytest.approx(1e-3)
    assert float(schedule(60)) == pytest.approx(1e-4 + 9e-4 / 2)  # halfway down the cosine
    assert float(schedule(110)) == pytest.approx(1e-4)
    assert float(schedule(500)) == pytest.approx(1e-4)


@pytest.mark.parametrize("name", backend_names())
def test_weight_decay_applies_to_matrices_and_embeddings_only(name):
    config = GPT2Config(n_embd=8, n_head=2, n_layer=2, n_vocab=16, n_ctx=8)
    params = jax.eval_shape(
        functools.partial(get_backend(name).init, config), jax.random.PRNGKey(0)
    )
    leaves = jax.tree_util.tree_flatten_with_path(decay_mask(params))[0]
    for path, decays in leaves:
        key = path[-1]
        leaf_name = str(getattr(key, "key", getattr(key, "name", key))).rsplit("/", 1)[-1]
        assert decays == (leaf_name in DECAYED), jax.tree_util.keystr(path)
