"""haiku_impl.convert: haiku's module-scope names <-> the canonical tree, exact both ways."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from haiku_impl import backend, convert
from tests.support.converters import CONFIG


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


def test_layer_i_of_a_stacked_tensor_becomes_module_h_i(canonical):
    converted = backend.from_canonical(canonical, CONFIG)
    np.testing.assert_array_equal(
        converted["gpt2/~/h1/~/mlp/~/c_fc"]["w"], canonical["blocks"]["mlp"]["c_fc"]["w"][1]
    )
    np.testing.assert_array_equal(converted["gpt2/~/ln_f"]["scale"], canonical["ln_f"]["g"])


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
