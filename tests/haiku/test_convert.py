"""haiku_impl.convert: haiku's module-scope names <-> the canonical tree, exact both ways."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from haiku_impl import backend, convert
from shared import params
from shared.config import GPT2Config

CONFIG = GPT2Config(n_embd=32, n_head=4, n_layer=3, n_vocab=300, n_ctx=64)


@pytest.fixture(scope="module")
def tree():
    return jax.jit(params.init_params, static_argnums=0)(CONFIG, jax.random.PRNGKey(1))


@pytest.fixture(scope="module")
def haiku_params():
    return jax.jit(backend.init, static_argnums=0)(CONFIG, jax.random.PRNGKey(0))


def test_parameters_are_named_by_gpt2_module_scopes(haiku_params):
    d = CONFIG.n_embd
    shapes = {m: {n: a.shape for n, a in p.items()} for m, p in haiku_params.items()}
    assert shapes["gpt2/~/wte"] == {"embeddings": (CONFIG.n_vocab, d)}
    assert shapes["gpt2/~/wpe"] == {"embeddings": (CONFIG.n_ctx, d)}
    assert shapes["gpt2/~/h0/~/attn/~/c_attn"] == {"w": (d, 3 * d), "b": (3 * d,)}
    assert shapes["gpt2/~/h0/~/attn/~/c_proj"] == {"w": (d, d), "b": (d,)}
    assert shapes["gpt2/~/h2/~/mlp/~/c_fc"] == {"w": (d, 4 * d), "b": (4 * d,)}
    assert shapes["gpt2/~/h2/~/mlp/~/c_proj"] == {"w": (4 * d, d), "b": (d,)}
    assert shapes["gpt2/~/h1/~/ln_1"] == {"scale": (d,), "offset": (d,)}
    assert shapes["gpt2/~/ln_f"] == {"scale": (d,), "offset": (d,)}
    assert len(shapes) == 3 + 6 * CONFIG.n_layer


def test_the_name_table_covers_exactly_the_initialised_parameters(haiku_params):
    initialised = {(module, name) for module, p in haiku_params.items() for name in p}
    assert set(convert.name_table(CONFIG)) == initialised


def test_layer_i_of_a_stacked_tensor_becomes_module_h_i(tree):
    converted = backend.from_canonical(tree, CONFIG)
    np.testing.assert_array_equal(
        converted["gpt2/~/h1/~/mlp/~/c_fc"]["w"], tree["blocks"]["mlp"]["c_fc"]["w"][1]
    )
    np.testing.assert_array_equal(converted["gpt2/~/ln_f"]["scale"], tree["ln_f"]["g"])


def test_canonical_to_haiku_to_canonical_is_bitwise_exact(tree):
    back = backend.to_canonical(backend.from_canonical(tree, CONFIG), CONFIG)
    flat, flat_back = params.flatten(tree), params.flatten(back)
    assert flat.keys() == flat_back.keys()
    for path in flat:
        assert flat_back[path].dtype == flat[path].dtype
        np.testing.assert_array_equal(flat[path], flat_back[path])


def test_haiku_to_canonical_to_haiku_is_bitwise_exact(haiku_params):
    back = backend.from_canonical(backend.to_canonical(haiku_params, CONFIG), CONFIG)
    assert back.keys() == haiku_params.keys()
    for module, module_params in haiku_params.items():
        assert back[module].keys() == module_params.keys()
        for name, value in module_params.items():
            np.testing.assert_array_equal(back[module][name], value)


def test_a_mis_shaped_haiku_parameter_is_named(haiku_params):
    broken = {m: dict(p) for m, p in haiku_params.items()}
    broken["gpt2/~/h1/~/attn/~/c_proj"]["w"] = np.zeros((3, 3), np.float32)
    with pytest.raises(ValueError, match=r"'gpt2/~/h1/~/attn/~/c_proj' / 'w' has shape \(3, 3\)"):
        backend.to_canonical(broken, CONFIG)


def test_a_missing_haiku_parameter_is_named(haiku_params):
    broken = {m: dict(p) for m, p in haiku_params.items()}
    del broken["gpt2/~/h2/~/ln_2"]["offset"]
    with pytest.raises(ValueError, match=r"'gpt2/~/h2/~/ln_2' / 'offset' is missing"):
        backend.to_canonical(broken, CONFIG)


def test_an_extra_layer_is_rejected(haiku_params):
    extra = {**haiku_params, "gpt2/~/h3/~/ln_1": haiku_params["gpt2/~/h0/~/ln_1"]}
    with pytest.raises(
        ValueError,
        match=r"Unexpected Haiku parameter 'gpt2/~/h3/~/ln_1' / 'offset', Haiku parameter 'gpt2/~/h3/~/ln_1' / 'scale'",
    ):
        backend.to_canonical(extra, CONFIG)


def test_an_invalid_canonical_tree_is_rejected_with_its_path(tree):
    broken = {**tree, "ln_f": {**tree["ln_f"], "g": tree["ln_f"]["g"][:2]}}
    with pytest.raises(ValueError, match="'ln_f/g' has shape"):
        backend.from_canonical(broken, CONFIG)
