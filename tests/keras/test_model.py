"""keras_impl's model and layers: GPT-2's shape and initialisation, Keras workflows (config,
saving, fit), the same outputs as the functional reference, and a clear error on a wrong backend."""

from __future__ import annotations

import inspect
import math
import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import keras
import numpy as np
import pytest

import keras_impl
from functional_impl.backend import backend as functional
from functional_impl.model import layer_norm
from keras_impl import GPT2LM, LayerNorm, convert
from keras_impl.backend import backend
from shared import kv_cache, params
from shared.backend import get_backend
from shared.config import MODEL_SIZES, GPT2Config
from tests.support.init_statistics import CONFIG as STATISTICS
from tests.support.init_statistics import assert_gpt2_statistics

TINY = GPT2Config(n_embd=32, n_head=4, n_layer=2, n_vocab=512, n_ctx=128)
apply_functional = jax.jit(functional.apply, static_argnames="config")


@pytest.fixture(scope="module")
def tree():
    """Canonical GPT-2 weights for TINY, given to both backends."""
    return jax.jit(params.init_params, static_argnums=0)(TINY, jax.random.PRNGKey(0))


@pytest.fixture(scope="module")
def model(tree):
    return GPT2LM.from_canonical(tree, TINY)


def _tokens(batch, seq, seed=1):
    tokens = jax.random.randint(jax.random.PRNGKey(seed), (batch, seq), 0, TINY.n_vocab)
    return tokens, jnp.broadcast_to(jnp.arange(seq), tokens.shape)


def _functional_logits(tree, tokens, positions, cache=None):
    return apply_functional(
        functional.from_canonical(tree, TINY), tokens, positions, cache, config=TINY
    )


def test_the_registry_serves_this_backend():
    assert get_backend("keras") is backend
    assert backend.name == "keras"
    assert hash(backend) == hash(get_backend("keras"))


def test_124m_has_gpt2s_parameter_count():
    config = MODEL_SIZES["124M"]
    assert GPT2LM(config).count_params() == config.n_params == 124_439_808


def test_variables_are_named_by_gpt2_layers(model):
    d = TINY.n_embd
    shapes = {convert.variable_path(model, v): tuple(v.shape) for v in model.trainable_variables}
    assert list(shapes)[:4] == [
        "wte/embeddings",
        "wpe/embeddings",
        "h0/ln_1/gamma",
        "h0/ln_1/beta",
    ]
    assert shapes["wte/embeddings"] == (TINY.n_vocab, d)
    assert shapes["wpe/embeddings"] == (TINY.n_ctx, d)
    assert shapes["h0/attn/c_attn/kernel"] == (d, 3 * d)
    assert shapes["h0/attn/c_attn/bias"] == (3 * d,)
    assert shapes["h1/attn/c_proj/kernel"] == (d, d)
    assert shapes["h1/mlp/c_fc/kernel"] == (d, 4 * d)
    assert shapes["h1/mlp/c_proj/kernel"] == (4 * d, d)
    assert shapes["ln_f/gamma"] == shapes["ln_f/beta"] == (d,)
    assert len(shapes) == 4 + 12 * TINY.n_layer
    assert [layer.name for layer in model.layers] == ["wte", "wpe", "h0", "h1", "ln_f"]


def test_get_config_and_from_config_round_trip(model):
    config = model.get_config()
    assert {k: config[k] for k in ("n_embd", "n_head", "n_layer", "n_vocab", "n_ctx", "ln_eps")} == {
        "n_embd": 32, "n_head": 4, "n_layer": 2, "n_vocab": 512, "n_ctx": 128, "ln_eps": 1e-5,
    }  # fmt: skip
    rebuilt = GPT2LM.from_config(config)
    assert rebuilt.config == TINY
    assert rebuilt.get_config() == config
    assert [v.shape for v in rebuilt.weights] == [v.shape for v in model.weights]


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # inside Keras
def test_a_saved_model_loads_back_with_its_weights(model, tmp_path):
    model.save(tmp_path / "gpt2.keras")
    loaded = keras.models.load_model(tmp_path / "gpt2.keras")
    assert isinstance(loaded, GPT2LM)
    assert loaded.config == TINY
    original = convert.model_params(model)
    for path, value in convert.model_params(loaded).items():
        np.testing.assert_array_equal(value, original[path])


def test_the_model_copies_the_weights_it_is_given(tree):
    """Keras' trainer donates variable buffers, so sharing them would delete the caller's tree."""
    model = GPT2LM.from_canonical(tree, TINY)
    for variable in model.trainable_variables:
        value = variable.value
        assert all(value is not leaf for leaf in jax.tree.leaves(tree))
    model.compile(
        optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    model.fit(_tokens(2, 8)[0], _tokens(2, 8, seed=2)[0], epochs=1, verbose=0)
    assert all(np.isfinite(np.asarray(leaf)).all() for leaf in jax.tree.leaves(tree))


def test_keras_initialisers_follow_gpt2_statistics():
    keras_params = convert.model_params(GPT2LM(STATISTICS))
    assert_gpt2_statistics(convert.to_canonical(keras_params, STATISTICS), STATISTICS)


def test_backend_init_is_the_canonical_init_of_the_same_key():
    key = jax.random.PRNGKey(3)
    keras_params = jax.jit(backend.init, static_argnums=0)(TINY, key)
    got = params.flatten(backend.to_canonical(keras_params, TINY))
    expected = params.flatten(jax.jit(params.init_params, static_argnums=0)(TINY, key))
    for path, value in expected.items():
        np.testing.assert_array_equal(got[path], value, err_msg=path)


def test_layer_norm_matches_the_functional_one():
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 5, 32)) * 3 + 1
    layer = LayerNorm(epsilon=1e-5)
    layer.build(x.shape)
    g = jax.random.normal(jax.random.PRNGKey(1), (32,))
    b = jax.random.normal(jax.random.PRNGKey(2), (32,))
    layer.gamma.assign(g)
    layer.beta.assign(b)
    expected = layer_norm(x, g, b, eps=1e-5)
    np.testing.assert_allclose(layer(x), expected, atol=1e-5, rtol=0)


def test_model_call_equals_functional_logits(model, tree):
    tokens, positions = _tokens(2, 24)
    expected, _ = _functional_logits(tree, tokens, positions)
    logits = model(tokens)
    assert logits.shape == (2, 24, TINY.n_vocab)
    np.testing.assert_allclose(logits, expected, atol=1e-5, rtol=0)


def test_model_call_with_a_cache_returns_logits_and_the_advanced_cache(model, tree):
    tokens, positions = _tokens(2, 7)
    cache = kv_cache.init_cache(TINY, 2, 16, jnp.float32)
    logits, new_cache = model(tokens, positions=positions, cache=cache)
    expected, expected_cache = _functional_logits(tree, tokens, positions, cache)
    assert int(new_cache.index) == 7
    np.testing.assert_allclose(logits, expected, atol=1e-5, rtol=0)
    for got, want in zip(
        new_cache.k + new_cache.v, expected_cache.k + expected_cache.v, strict=True
    ):
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def test_apply_runs_in_the_parameters_dtype(tree):
    """bfloat16 parameters run a bfloat16 model: nothing is cast, and it equals the reference."""
    bf16 = params.cast(tree, jnp.bfloat16)
    tokens, positions = _tokens(2, 9)
    apply = jax.jit(backend.apply, static_argnames="config")
    logits, _ = apply(backend.from_canonical(bf16, TINY), tokens, positions, None, config=TINY)
    expected, _ = apply_functional(
        functional.from_canonical(bf16, TINY), tokens, positions, None, config=TINY
    )
    assert logits.dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(logits, np.float32), np.asarray(expected, np.float32))


def test_fit_lowers_the_loss_on_one_batch():
    keras.utils.set_random_seed(0)
    model = GPT2LM(TINY)
    model.compile(
        optimizer=keras.optimizers.AdamW(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    tokens = np.asarray(_tokens(4, 17)[0])
    history = model.fit(tokens[:, :-1], tokens[:, 1:], batch_size=4, epochs=8, verbose=0)
    losses = history.history["loss"]
    assert losses[0] == pytest.approx(math.log(TINY.n_vocab), rel=0.05)
    assert losses[-1] < losses[0] - 0.1


def test_importing_under_another_keras_backend_fails_with_one_clear_sentence():
    result = subprocess.run(
        [sys.executable, "-c", "import keras_impl"],
        env={**_environment(), "KERAS_BACKEND": "torch"},
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert (
        "ImportError: The Keras backend of gpt2-jax runs Keras 3 on JAX only, but Keras is set to "
        "the 'torch' backend; set KERAS_BACKEND=jax" in result.stderr
    )


def test_importing_after_keras_started_on_another_backend_fails_clearly():
    code = "import os, keras; os.environ['KERAS_BACKEND'] = 'jax'; import keras_impl"
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={**_environment(), "KERAS_BACKEND": "numpy"},
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert "but Keras is set to the 'numpy' backend; set KERAS_BACKEND=jax" in result.stderr


def _environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}


def _examples() -> dict[str, str]:
    """The ```python blocks under `Example:` in the public docstrings of keras_impl."""
    objects = {name: getattr(keras_impl, name) for name in keras_impl.__all__}
    objects["GPT2LM.from_canonical"] = GPT2LM.from_canonical
    examples = {}
    for name, obj in objects.items():
        blocks = re.findall(r"```python\n(.*?)```", inspect.getdoc(obj) or "", re.DOTALL)
        assert blocks, f"{name} has no runnable Example"
        examples[name] = "\n".join(blocks)
    return examples


@pytest.mark.parametrize("name", sorted(_examples()))
def test_the_docstring_example_runs(name):
    exec(compile(_examples()[name], f"<{name} example>", "exec"), {})
