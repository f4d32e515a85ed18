"""A text's residual stream (`GPT2.hidden_states`, `ApplyOptions(output="hidden_states")`): each
entry is what the model computes at that depth, and the last one is what the logits project."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from functional_impl.model import layer_norm, transformer_block
from shared.api import from_canonical
from shared.apply_options import ApplyOptions
from shared.attention import attention_mask
from shared.config import GPT2Config
from shared.logits import tied_logits
from shared.params import init_params, unstack_blocks
from shared.tokenizer import Tokenizer
from tests.support.paths import BPE_DIR

CONFIG = GPT2Config(n_embd=32, n_head=4, n_layer=3, n_vocab=50257, n_ctx=64)
TEXT = "To be, or not to be, that is the question."


@pytest.fixture(scope="module")
def tree():
    return init_params(CONFIG, jax.random.PRNGKey(0))


@pytest.fixture(scope="module")
def model(tree):
    return from_canonical(tree, CONFIG, Tokenizer(BPE_DIR), "functional")


def test_each_entry_is_the_input_of_its_block_and_the_last_the_final_layer_norm(model, tree):
    """Rebuilt one block at a time from the model's own functions, on the unpadded tokens."""
    ids = model.tokenizer.encode(TEXT)
    states = model.hidden_states(TEXT)
    assert states.shape == (CONFIG.n_layer + 1, len(ids), CONFIG.n_embd)
    assert states.dtype == np.float32
    x = tree["wte"][jnp.asarray(ids)][None] + tree["wpe"][: len(ids)][None]
    mask = attention_mask(None, len(ids))
    for i, block in enumerate(unstack_blocks(tree)["blocks"]):
        np.testing.assert_allclose(states[i], x[0], rtol=1e-5, atol=1e-5)
        x, _ = transformer_block(x, **block, n_head=CONFIG.n_head, eps=CONFIG.ln_eps, mask=mask)
    np.testing.assert_allclose(states[-1], layer_norm(x, **tree["ln_f"])[0], rtol=1e-5, atol=1e-5)


def test_the_last_entry_projects_onto_the_models_logits(model):
    ids = model.tokenizer.encode(TEXT)
    tokens = jnp.asarray([ids])
    positions = jnp.arange(len(ids))[None]
    logits, _ = model.backend.apply(model.params, tokens, positions, None, config=CONFIG)
    projected = tied_logits(jnp.asarray(model.hidden_states(TEXT)[-1]), model.params["wte"])
    np.testing.assert_allclose(projected, logits[0], rtol=1e-4, atol=1e-4)


def test_a_longer_text_keeps_the_states_of_its_prefix(model):
    """Causal attention: what follows a token (more text, or the bucket's padding) cannot change
    its states."""
    short = model.hidden_states("To be, or")
    longer = model.hidden_states(TEXT)
    np.testing.assert_allclose(longer[:, : short.shape[1]], short, rtol=1e-5, atol=1e-5)


def test_the_scanned_stacked_tree_gives_the_unrolled_layers_states(model, tree):
    """The functional model's two layer loops (`lax.scan` over the canonical tree, and one dict
    per layer) collect the same stream."""
    tokens = jnp.asarray([model.tokenizer.encode(TEXT)])
    positions = jnp.arange(tokens.shape[1])[None]
    options = ApplyOptions(output="hidden_states")
    unrolled, _ = model.backend.apply(
        model.params, tokens, positions, None, config=CONFIG, options=options
    )
    scanned, _ = model.backend.apply(tree, tokens, positions, None, config=CONFIG, options=options)
    np.testing.assert_allclose(scanned, unrolled, rtol=1e-5, atol=1e-5)


def test_hidden_states_and_last_only_are_refused_together(model):
    tokens = jnp.zeros((1, 4), jnp.int32)
    with pytest.raises(ValueError, match="cannot be combined with last_only"):
        model.backend.apply(
            model.params, tokens, tokens, None, config=CONFIG,
            options=ApplyOptions(output="hidden_states", last_only=True),
        )  # fmt: skip


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "Give a non-empty text to read the hidden states of, got ''"),
        (None, "Give a non-empty text to read the hidden states of, got None"),
        (" the" * 65, r"The text is 65 tokens; hidden states need 1 to 64 \(the model's context\)"),
    ],
)
def test_bad_texts_are_refused_with_a_sentence(model, text, message):
    with pytest.raises(ValueError, match=message):
        model.hidden_states(text)
