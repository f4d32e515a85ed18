"""GPT-2's initialisation as the tests check it, on the canonical tree a backend's own
initialisers give (converted back, so every backend is checked by the same rules)."""

from __future__ import annotations

import math

import jax
import numpy as np
import pytest

from shared import params
from shared.config import GPT2Config

CONFIG = GPT2Config(n_embd=128, n_head=4, n_layer=4, n_vocab=2000, n_ctx=256)
"""Large enough that every tensor's sample mean and deviation are close to the drawn ones."""


def assert_gpt2_statistics(tree: params.Params, config: GPT2Config) -> None:
    """LayerNorm gains 1 and biases 0; weights N(0, 0.02), the projections into the residual
    stream (`c_proj`) N(0, 0.02 / sqrt(2 * n_layer))."""
    residual_std = 0.02 / math.sqrt(2 * config.n_layer)
    for path, value in jax.device_get(params.flatten(tree)).items():
        name = path.rsplit("/", 1)[-1]
        if name == "g":
            np.testing.assert_array_equal(value, 1.0, err_msg=path)
        elif name == "b":
            np.testing.assert_array_equal(value, 0.0, err_msg=path)
        else:
            std = residual_std if path.endswith("c_proj/w") else 0.02
            assert value.std() == pytest.approx(std, rel=0.05), path
            assert abs(value.mean()) < std / 10, path
