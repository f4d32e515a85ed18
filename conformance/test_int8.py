"""Weight-only int8 (`shared.quantization`): every backend gives the functional backend's int8
logits, those stay near float32's, and the int8 tree is a quarter of float32's bytes."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conformance.conftest import TINY, canonical_tree, compared_with_reference, lively_tree
from conformance.report import max_abs_diff
from conformance.test_logits import forward
from shared.config import MODEL_SIZES
from shared.params import flatten, init_params
from shared.quantization import (
    INPUT_AXIS,
    QuantizedWeight,
    dequantize_array,
    quantize,
    quantize_array,
)

DRIFT_TOLERANCE = {"tiny": 0.02, "124M": 0.05}
"""int8 vs float32 logits, max |difference| / max |float32 logit|: weight rounding of at most
half a step (1/254 of a channel's largest weight) through every layer."""

BACKEND_TOLERANCE = 1e-5
"""Each backend's int8 logits vs the functional backend's, relative to max |logit|: the same
int8 values and scales; Keras divides by the inverse scale where the others multiply."""

GREEDY_AGREEMENT = 0.9
"""Positions whose int8 argmax is float32's (sharp random weights, 4 x 32 positions)."""

INT8_BYTES_FRACTION = 0.27
"""int8 weights bytes / float32's at 124M: a quarter, plus scales, wpe, biases and LayerNorms."""


def relative_diff(a: jax.Array, b: jax.Array) -> float:
    return max_abs_diff(a, b) / float(jnp.max(jnp.abs(b)))


@functools.cache
def quantized_tree(config_name: str) -> dict:
    """The int8 tree of the lively tiny weights, or of GPT-2's init at 124M."""
    tree = lively_tree(TINY) if config_name == "tiny" else canonical_tree(MODEL_SIZES["124M"])
    return quantize(tree)


@pytest.mark.parametrize("config_name", ["tiny", "124M"])
def test_int8_logits_stay_near_float32(reference, config_name, report):
    """One forward pass of one row; the functional backend (the others equal it, below)."""
    config = TINY if config_name == "tiny" else MODEL_SIZES["124M"]
    tree = lively_tree(TINY) if config_name == "tiny" else canonical_tree(config)
    tokens = jax.random.randint(jax.random.PRNGKey(6), (1, 16), 0, config.n_vocab)
    expected = forward(reference, tree, config, tokens)
    got = forward(reference, quantized_tree(config_name), config, tokens)
    drift = relative_diff(got, expected)
    report.check("int8 logits vs float32 (relative)", "functional", config_name, drift,
                 DRIFT_TOLERANCE[config_name])  # fmt: skip


@compared_with_reference
def test_int8_logits_match_the_reference_int8_logits(backend, reference, report):
    tokens = jax.random.randint(jax.random.PRNGKey(7), (2, 24), 0, TINY.n_vocab)
    tree = quantized_tree("tiny")
    diff = relative_diff(
        forward(backend, tree, TINY, tokens), forward(reference, tree, TINY, tokens)
    )
    report.check("int8 logits vs functional int8 (relative)", backend.name, "tiny", diff,
                 BACKEND_TOLERANCE)  # fmt: skip


def test_int8_greedy_ids_agree_with_float32(reference, report):
    tokens = jax.random.randint(jax.random.PRNGKey(8), (4, 32), 0, TINY.n_vocab)
    fp32 = forward(reference, lively_tree(TINY), TINY, tokens).argmax(-1)
    int8 = forward(reference, quantized_tree("tiny"), TINY, tokens).argmax(-1)
    disagreement = float(jnp.mean(fp32 != int8))
    report.check("int8 greedy ids differing from float32 (fraction)", "functional", "tiny",
                 disagreement, 1 - GREEDY_AGREEMENT)  # fmt: skip


def test_quantize_dequantize_error_is_at_most_half_a_step_per_channel():
    """Every weight within half its channel's step (its scale) of the int8 value times the scale."""
    flat = flatten(lively_tree(TINY))
    for path, axis in INPUT_AXIS.items():
        weight = quantize_array(np.asarray(flat[path]), axis)
        error = np.abs(np.asarray(dequantize_array(weight)) - np.asarray(flat[path]))
        step = np.asarray(weight.scale)
        # plus float32's rounding of values * scale, up to 127 steps: 127 * 2**-24 of a step
        assert np.all(error <= step * (0.5 + 1e-5)), path


def test_int8_params_convert_back_to_the_int8_tree(backend):
    """Values exactly; scales up to one rounding (Keras keeps their inverses)."""
    tree = quantized_tree("tiny")
    back = backend.to_canonical(backend.from_canonical(tree, TINY), TINY)
    is_int8 = lambda x: isinstance(x, QuantizedWeight)  # noqa: E731
    for path, weight in flatten(tree).items():
        got = flatten(back)[path]
        assert is_int8(got) == is_int8(weight), path
        if is_int8(weight):
            np.testing.assert_array_equal(got.values, weight.values, err_msg=path)
            np.testing.assert_allclose(got.scale, weight.scale, rtol=1e-6, err_msg=path)
        else:
            np.testing.assert_array_equal(got, weight, err_msg=path)


def test_int8_weights_are_at_most_27_percent_of_float32_bytes_at_124M(backend):
    """Each backend's int8 parameters at 124M, counted from shapes (nothing is allocated)."""
    config = MODEL_SIZES["124M"]

    def held(int8: bool) -> object:
        def build(key: jax.Array) -> object:
            tree = init_params(config, key)
            return backend.from_canonical(quantize(tree) if int8 else tree, config)

        return jax.eval_shape(build, jax.random.PRNGKey(0))

    def nbytes(tree: object) -> int:
        return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))

    assert nbytes(held(True)) <= INT8_BYTES_FRACTION * nbytes(held(False))
