"""The int8 quantiser (`shared.quantization`) and where int8 is refused."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from shared import api
from shared.config import GPT2Config
from shared.embedding import lookup
from shared.errors import GPT2Error
from shared.params import canonical_shapes, flatten, unflatten
from shared.quantization import (
    INPUT_AXIS,
    QuantizedWeight,
    dequantize_array,
    matmul,
    quantize,
    quantize_array,
)
from shared.training.config import TrainingConfig

TINY = GPT2Config(n_embd=16, n_head=2, n_layer=2, n_vocab=64, n_ctx=32)


def weights(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def test_each_output_channel_spans_the_int8_range_exactly():
    q = quantize_array(weights((8, 5)), axis=-2)
    assert q.values.dtype == np.int8 and q.scale.dtype == np.float32
    np.testing.assert_array_equal(np.abs(q.values).max(axis=0), 127)
    assert q.values.min() >= -127  # symmetric: -128 is never used


def test_scale_is_the_largest_magnitude_over_the_input_axis_over_127():
    w = weights((8, 5))
    np.testing.assert_allclose(quantize_array(w, -2).scale, np.abs(w).max(0, keepdims=True) / 127)


def test_a_zero_column_gets_scale_one_and_zero_values():
    w = weights((8, 5))
    w[:, 2] = 0
    q = quantize_array(w, axis=-2)
    assert q.scale[0, 2] == 1
    np.testing.assert_array_equal(q.values[:, 2], 0)
    assert np.all(np.isfinite(dequantize_array(q)))


def test_scales_have_one_entry_per_output_channel():
    """A projection [layer, in, out] per output column; `wte` [n_vocab, n_embd] per vocab row."""
    shapes = canonical_shapes(TINY)
    tree = flatten(quantize(unflatten({path: weights(shape) for path, shape in shapes.items()})))
    for path, axis in INPUT_AXIS.items():
        expected = list(shapes[path])
        expected[axis] = 1
        assert tree[path].scale.shape == tuple(expected), path
        assert tree[path].values.shape == shapes[path], path
    assert not isinstance(tree["wpe"], QuantizedWeight)
    assert tree["blocks/attn/c_attn/b"].dtype == np.float32


def test_the_product_scales_output_columns_as_the_dequantised_weight_does():
    x, q = weights((3, 8), seed=1), quantize_array(weights((8, 5)), axis=-2)
    np.testing.assert_allclose(matmul(x, q), x @ dequantize_array(q), rtol=1e-5, atol=1e-6)


def test_int8_lookup_scales_each_row_and_gives_nan_outside_the_table():
    table = quantize_array(weights((6, 4)), axis=-1)
    rows = lookup(table, jnp.array([0, 5, 6]))
    np.testing.assert_allclose(rows[:2], dequantize_array(table)[[0, 5]], rtol=1e-6)
    assert np.all(np.isnan(rows[2]))


def test_training_in_int8_is_refused_in_one_sentence():
    with pytest.raises(GPT2Error, match=r"float32 or bfloat16, got 'int8' \(int8 weights are for"):
        TrainingConfig(compute_dtype="int8")


def test_an_unknown_dtype_is_refused_with_the_allowed_ones():
    with pytest.raises(
        ValueError, match=r"Unknown dtype 'int4'; allowed: float32, bfloat16, int8\."
    ):
        api.load_model(dtype="int4")


def test_int8_on_a_mesh_is_refused_before_loading():
    with pytest.raises(ValueError, match="dtype int8 runs on one device"):
        api.load_model(dtype="int8", mesh="data=1")
