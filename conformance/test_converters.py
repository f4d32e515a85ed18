"""Converters: canonical -> backend -> canonical is exact, and a wrong converter is caught."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conformance.conftest import TINY, canonical_tree
from conformance.report import Report, max_abs_diff
from shared import params


def test_round_trip_through_the_backend_is_bitwise(backend, config, config_name, canonical, report):
    back = backend.to_canonical(backend.from_canonical(canonical, config), config)
    flat, flat_back = params.flatten(canonical), params.flatten(back)
    assert flat.keys() == flat_back.keys()
    assert all(np.asarray(flat_back[k]).dtype == np.float32 for k in flat)
    diff = max_abs_diff([flat[k] for k in flat], [flat_back[k] for k in flat])
    report.check("converter round trip is exact", backend.name, config_name, diff, 0.0)


def _swap_q_and_k(tree: dict) -> dict:
    w = tree["blocks"]["attn"]["c_attn"]["w"]
    q, k, v = jnp.split(w, 3, axis=-1)
    return _with_attn(tree, "c_attn", jnp.concatenate([k, q, v], axis=-1))


def _transpose_c_proj(tree: dict) -> dict:
    return _with_attn(tree, "c_proj", jnp.swapaxes(tree["blocks"]["attn"]["c_proj"]["w"], -1, -2))


def _with_attn(tree: dict, name: str, w: jax.Array) -> dict:
    attn = {**tree["blocks"]["attn"], name: {**tree["blocks"]["attn"][name], "w": w}}
    return {**tree, "blocks": {**tree["blocks"], "attn": attn}}


class _MiswiredBackend:
    """A converter bug that survives a round trip: the same mistake both ways."""

    def __init__(self, inner, mistake) -> None:
        self.inner, self.mistake, self.name = inner, mistake, f"miswired-{inner.name}"

    def from_canonical(self, tree, config):
        return self.inner.from_canonical(self.mistake(tree), config)

    def to_canonical(self, backend_params, config):
        return self.mistake(self.inner.to_canonical(backend_params, config))

    def apply(self, *args, **kwargs):
        return self.inner.apply(*args, **kwargs)


@pytest.mark.parametrize(
    "mistake", [_swap_q_and_k, _transpose_c_proj], ids=["qk-swapped", "c_proj-transposed"]
)
def test_the_suite_catches_a_miswired_converter(backend, reference, mistake):
    """The round trip alone cannot see it; the logits check does."""
    tree = canonical_tree(TINY)
    miswired = _MiswiredBackend(backend, mistake)
    back = miswired.to_canonical(miswired.from_canonical(tree, TINY), TINY)
    assert max_abs_diff(params.flatten(back), params.flatten(tree)) == 0.0
    tokens = jax.random.randint(jax.random.PRNGKey(1), (2, 16), 0, TINY.n_vocab)
    positions = jnp.broadcast_to(jnp.arange(16), tokens.shape)
    expected, _ = reference.apply(
        reference.from_canonical(tree, TINY), tokens, positions, None, config=TINY
    )
    logits, _ = miswired.apply(
        miswired.from_canonical(tree, TINY), tokens, positions, None, config=TINY
    )
    with pytest.raises(AssertionError, match="logits"):
        Report().check(
            "logits vs functional", miswired.name, "tiny", max_abs_diff(logits, expected), 1e-4
        )
