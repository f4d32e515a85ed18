"""Attention patterns (`GPT2.attentions`, `ApplyOptions(output="attentions")`): each block's is the
softmax its own queries and keys give, rebuilt here from the residual stream."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from functional_impl.model import layer_norm
from shared.api import from_canonical
from shared.apply_options import ApplyOptions
from shared.config import GPT2Config
from shared.linear import linear
from shared.params import init_params, unstack_blocks
from shared.tokenizer import Tokenizer
from tests.support.paths import BPE_DIR

CONFIG = GPT2Config(n_embd=32, n_head=4, n_layer=3, n_vocab=50257, n_ctx=64)
TEXT = "To be, or not to be, that is the question."


@pytest.fixture(scope="module")
def tree():
    tree = init_params(CONFIG, jax.random.PRNGKey(0))
    # Larger query and key weights than GPT-2's initial 0.02 make the patterns uneven, so a
    # wrong head, layer or scale shows.
    blocks = tree["blocks"]
    attn = {**blocks["attn"], "c_attn": {**blocks["attn"]["c_attn"]}}
    attn["c_attn"]["w"] = attn["c_attn"]["w"] * 20
    return {**tree, "blocks": {**blocks, "attn": attn}}


@pytest.fixture(scope="module", params=["functional", "haiku", "keras"])
def model(tree, request):
    return from_canonical(tree, CONFIG, Tokenizer(BPE_DIR), request.param)


def test_each_block_attends_as_its_queries_and_keys_say(model, tree):
    """softmax(q k^T / sqrt(head_dim)) over earlier tokens, from ln_1 of the block's input."""
    n = len(model.tokenizer.encode(TEXT))
    patterns = model.attentions(TEXT)
    assert patterns.shape == (CONFIG.n_layer, CONFIG.n_head, n, n)
    assert patterns.dtype == np.float32
    states = model.hidden_states(TEXT)
    causal = np.tril(np.ones((n, n), bool))
    for i, block in enumerate(unstack_blocks(tree)["blocks"]):
        qkv = linear(layer_norm(jnp.asarray(states[i]), **block["ln_1"]), **block["attn"]["c_attn"])
        q, k, _ = np.split(np.asarray(qkv).reshape(n, 3, CONFIG.n_head, CONFIG.head_dim), 3, 1)
        scores = np.einsum("qhd,khd->hqk", q[:, 0], k[:, 0]) / np.sqrt(CONFIG.head_dim)
        expected = jax.nn.softmax(np.where(causal, scores, -np.inf), axis=-1)
        np.testing.assert_allclose(patterns[i], expected, rtol=1e-4, atol=1e-5)
    assert patterns.max() > 0.5  # uneven patterns, not a uniform average


def test_rows_are_distributions_over_earlier_tokens(model):
    patterns = model.attentions(TEXT)
    np.testing.assert_allclose(patterns.sum(axis=-1), 1.0, rtol=1e-5)
    assert np.all(np.triu(patterns, k=1) == 0)


def test_a_longer_text_keeps_the_patterns_of_its_prefix(model):
    short = model.attentions("To be, or")
    longer = model.attentions(TEXT)
    n = short.shape[-1]
    np.testing.assert_allclose(longer[:, :, :n, :n], short, rtol=1e-5, atol=1e-6)


def test_through_a_cache_the_keys_are_its_slots(model):
    """A decode step's attentions over the cache's slots: the full forward's last row, then zeros
    for the slots not yet written."""
    ids = model.tokenizer.encode(TEXT)
    n, slots = len(ids), 32
    cache = model.backend.init_cache(CONFIG, 1, slots, jnp.float32)
    apply = model.backend.apply
    _, cache = apply(model.params, jnp.asarray([ids[:-1]]), jnp.arange(n - 1)[None], cache,
                     config=CONFIG)  # fmt: skip
    step, _ = apply(model.params, jnp.asarray([ids[-1:]]), jnp.asarray([[n - 1]]), cache,
                    config=CONFIG, options=ApplyOptions(output="attentions"))  # fmt: skip
    assert step.shape == (CONFIG.n_layer, 1, CONFIG.n_head, 1, slots)
    np.testing.assert_allclose(step[:, 0, :, 0, :n], model.attentions(TEXT)[:, :, -1], atol=1e-5)
    assert np.all(np.asarray(step[..., n:]) == 0)


def test_the_scanned_stacked_tree_gives_the_unrolled_layers_patterns(tree):
    from shared.backend import get_backend

    functional = get_backend("functional")
    tokens = jnp.asarray([Tokenizer(BPE_DIR).encode(TEXT)])
    positions = jnp.arange(tokens.shape[1])[None]
    options = ApplyOptions(output="attentions")
    unrolled, _ = functional.apply(
        functional.from_canonical(tree, CONFIG), tokens, positions, None, config=CONFIG,
        options=options,
    )  # fmt: skip
    scanned, _ = functional.apply(tree, tokens, positions, None, config=CONFIG, options=options)
    np.testing.assert_allclose(scanned, unrolled, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"last_only": True}, "attentions covers every position; it cannot be combined"),
    ],
)
def test_attentions_refuse_other_outputs(model, options, message):
    """(Asking for the hidden states too cannot be written: `ApplyOptions.output` is one.)"""
    tokens = jnp.zeros((1, 4), jnp.int32)
    with pytest.raises(ValueError, match=message):
        model.backend.apply(
            model.params, tokens, tokens, None, config=CONFIG,
            options=ApplyOptions(output="attentions", **options),
        )  # fmt: skip


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "Give a non-empty text to read the attentions of, got ''"),
        (" the" * 65, r"The text is 65 tokens; attentions need 1 to 64 \(the model's context\)"),
    ],
)
def test_bad_texts_are_refused_with_a_sentence(model, text, message):
    with pytest.raises(ValueError, match=message):
        model.attentions(text)
