"""The real 124M shapes, with random weights: parameter tree, forward pass and 8 generated tokens."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from functional_impl.backend import backend
from shared import params
from shared.config import MODEL_SIZES
from shared.generation import Generator

CONFIG = MODEL_SIZES["124M"]


@pytest.fixture(scope="module")
def tree():
    return jax.jit(lambda key: params.init_params(CONFIG, key))(jax.random.PRNGKey(0))


def test_124m_tree_has_openai_shapes_and_parameter_count(tree):
    params.validate(tree, CONFIG)
    assert sum(x.size for x in jax.tree.leaves(tree)) == 124_439_808


def test_gpt2_initialisation_statistics(tree):
    assert float(jnp.std(tree["wte"])) == pytest.approx(0.02, rel=0.01)
    residual = float(jnp.std(tree["blocks"]["mlp"]["c_proj"]["w"]))
    assert residual == pytest.approx(0.02 / np.sqrt(24), rel=0.01)
    assert float(jnp.abs(tree["blocks"]["attn"]["c_attn"]["b"]).max()) == 0
    assert float(tree["ln_f"]["g"].min()) == 1


def test_124m_forward_and_eight_generated_tokens(tree):
    prompt = list(range(1000, 1020))
    logits, _ = backend.apply(
        tree, jnp.asarray([prompt]), jnp.arange(20)[None], None, config=CONFIG
    )
    assert logits.shape == (1, 20, 50257)
    assert bool(jnp.isfinite(logits).all())
    [completion] = Generator(backend, tree, CONFIG).generate([prompt], 8)
    assert len(completion.tokens) == 8
    assert completion.tokens[0] == int(jnp.argmax(logits[0, -1]))


def test_validation_names_the_wrong_tensor(tree):
    broken = {**tree, "blocks": {**tree["blocks"], "attn": {**tree["blocks"]["attn"]}}}
    broken["blocks"]["attn"]["c_attn"] = {
        "w": jnp.zeros((12, 2304, 768)),
        "b": jnp.zeros((12, 2304)),
    }
    with pytest.raises(
        ValueError, match=r"'blocks/attn/c_attn/w' has shape \(12, 2304, 768\).*\(12, 768, 2304\)"
    ):
        params.validate(broken, CONFIG)
