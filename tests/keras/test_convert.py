"""keras_impl.convert: Keras variable paths <-> the canonical tree, exact both ways."""

from __future__ import annotations

import jax
import keras
import numpy as np
import pytest

from keras_impl import GPT2LM, convert
from keras_impl.backend import backend
from tests.support.converters import CONFIG


@pytest.fixture(scope="module")
def keras_params():
    """Weights made by the model's own Keras initialisers, not by the canonical init."""
    return convert.model_params(GPT2LM(CONFIG))


def test_the_name_table_covers_exactly_the_models_variables(keras_params):
    assert set(convert.name_table(CONFIG)) == set(keras_params)


def test_layer_i_of_a_stacked_tensor_becomes_layer_h_i(canonical):
    converted = backend.from_canonical(canonical, CONFIG)
    np.testing.assert_array_equal(
        converted["h1/mlp/c_fc/kernel"], canonical["blocks"]["mlp"]["c_fc"]["w"][1]
    )
    np.testing.assert_array_equal(converted["ln_f/gamma"], canonical["ln_f"]["g"])
    np.testing.assert_array_equal(converted["wte/embeddings"], canonical["wte"])


def test_keras_to_canonical_to_keras_is_bitwise_exact(keras_params):
    back = backend.from_canonical(backend.to_canonical(keras_params, CONFIG), CONFIG)
    assert back.keys() == keras_params.keys()
    for path, value in keras_params.items():
        np.testing.assert_array_equal(back[path], value)


def test_load_into_puts_canonical_weights_into_the_model(canonical):
    model = GPT2LM.from_canonical(canonical, CONFIG)
    loaded = convert.model_params(model)
    for path, value in backend.from_canonical(canonical, CONFIG).items():
        np.testing.assert_array_equal(loaded[path], value)


def test_a_mis_shaped_keras_variable_is_named(keras_params):
    broken = {**keras_params, "h1/attn/c_proj/kernel": np.zeros((3, 3), np.float32)}
    with pytest.raises(
        ValueError, match=r"Keras variable 'h1/attn/c_proj/kernel' has shape \(3, 3\).*\(32, 32\)"
    ):
        backend.to_canonical(broken, CONFIG)


def test_a_missing_keras_variable_is_named(keras_params):
    broken = dict(keras_params)
    del broken["h2/ln_2/beta"]
    with pytest.raises(ValueError, match=r"Keras variable 'h2/ln_2/beta' is missing"):
        backend.to_canonical(broken, CONFIG)


def test_an_extra_layer_is_rejected(keras_params):
    extra = {**keras_params, "h3/ln_1/gamma": keras_params["h0/ln_1/gamma"]}
    with pytest.raises(ValueError, match=r"Unexpected Keras variable 'h3/ln_1/gamma'"):
        backend.to_canonical(extra, CONFIG)


def test_frozen_layers_are_loaded_and_read_like_the_others(canonical):
    """Keras keeps frozen weights out of `trainable_variables`; they are weights all the same."""
    model = GPT2LM(CONFIG)
    model.blocks[0].trainable = False
    convert.load_into(model, canonical)
    np.testing.assert_array_equal(
        model.blocks[0].attn.c_attn.kernel, canonical["blocks"]["attn"]["c_attn"]["w"][0]
    )
    read = convert.to_canonical(convert.model_params(model), CONFIG)
    for saved, loaded in zip(jax.tree.leaves(canonical), jax.tree.leaves(read), strict=True):
        np.testing.assert_array_equal(saved, loaded)


def test_the_model_builds_in_the_functional_api_on_a_variable_length_input(canonical):
    tokens = keras.Input((None,), dtype="int32")
    model = GPT2LM(CONFIG)
    wrapped = keras.Model(tokens, model(tokens))
    convert.load_into(model, canonical)
    ids = np.arange(10, dtype=np.int32)[None]
    np.testing.assert_allclose(wrapped.predict(ids, verbose=0), model(ids), rtol=0, atol=1e-5)
