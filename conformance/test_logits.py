"""Logits: every backend equals the functional reference, also on a real-format OpenAI checkpoint."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import pytest

from conformance.conftest import TINY, compared_with_reference
from conformance.report import max_abs_diff
from shared.apply_options import ApplyOptions

LOGITS_TOLERANCE = 1e-4


def forward(backend, tree, config, tokens, output="logits"):
    """Full (cache-less) forward of `tokens` [batch, seq] with canonical weights `tree`: the
    logits, or what `output` ("hidden_states" or "attentions") asks for."""
    positions = jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape)
    params = backend.from_canonical(tree, config)
    options = ApplyOptions(output=output)
    result, _ = jitted_apply(backend)(
        params, tokens, positions, None, config=config, options=options
    )
    return result


@functools.cache
def jitted_apply(backend):
    """One jitted `backend.apply` per backend: weights of shapes it has seen reuse its trace."""
    return jax.jit(backend.apply, static_argnames=("config", "options"))


@compared_with_reference
def test_logits_match_the_reference(backend, reference, config, config_name, canonical, report):
    tokens = jax.random.randint(jax.random.PRNGKey(1), (2, 24), 0, config.n_vocab)
    diff = max_abs_diff(
        forward(backend, canonical, config, tokens), forward(reference, canonical, config, tokens)
    )
    report.check("logits vs functional", backend.name, config_name, diff, LOGITS_TOLERANCE)


@compared_with_reference
@pytest.mark.parametrize(
    ("output", "seed", "check", "tolerance"),
    [
        ("hidden_states", 4, "hidden states, every layer, vs functional", LOGITS_TOLERANCE),
        ("attentions", 5, "attention probabilities, every layer, vs functional", 1e-5),
    ],
    ids=["hidden_states", "attentions"],
)
def test_internals_match_the_reference(
    backend, reference, config, config_name, canonical, report, output, seed, check, tolerance
):
    """The residual stream at every depth, or every block's attention probabilities, so a
    disagreement is placed in its layer (and head)."""
    tokens = jax.random.randint(jax.random.PRNGKey(seed), (2, 24), 0, config.n_vocab)
    got, expected = (forward(b, canonical, config, tokens, output) for b in (backend, reference))
    shapes = {
        "hidden_states": (config.n_layer + 1, 2, 24, config.n_embd),
        "attentions": (config.n_layer, 2, config.n_head, 24, 24),
    }
    assert got.shape == shapes[output]
    report.check(check, backend.name, config_name, max_abs_diff(got, expected), tolerance)


@compared_with_reference
def test_openai_checkpoint_gives_the_same_logits_in_every_backend(
    backend, reference, openai_checkpoint, report
):
    tree, config = openai_checkpoint
    assert config == TINY
    tokens = jax.random.randint(jax.random.PRNGKey(2), (3, 20), 0, config.n_vocab)
    diff = max_abs_diff(
        forward(backend, tree, config, tokens), forward(reference, tree, config, tokens)
    )
    report.check(
        "OpenAI TF checkpoint logits vs functional", backend.name, "tiny", diff, LOGITS_TOLERANCE
    )


def test_last_only_gives_the_last_position_of_the_full_logits(
    backend, config, config_name, canonical, report
):
    """What a prefill asks for: the last position's logits, cut before the output projection."""
    tokens = jax.random.randint(jax.random.PRNGKey(3), (2, 24), 0, config.n_vocab)
    positions = jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape)
    apply = jax.jit(backend.apply, static_argnames=("config", "options"))
    params = backend.from_canonical(canonical, config)
    options = ApplyOptions(last_only=True)
    last, _ = apply(params, tokens, positions, None, config=config, options=options)
    assert last.shape == (2, 1, config.n_vocab)
    diff = max_abs_diff(last, forward(backend, canonical, config, tokens)[:, -1:])
    report.check("last_only logits vs full logits", backend.name, config_name, diff, 1e-5)


def test_a_sequence_past_the_context_is_refused(backend, config, canonical):
    """Positions past the context have no embedding: refused rather than computed as NaN."""
    tokens = jnp.zeros((1, config.n_ctx + 1), jnp.int32)
    with pytest.raises(ValueError, match=f"exceeds the model's context of {config.n_ctx} "):
        forward(backend, canonical, config, tokens)


@pytest.mark.parametrize(
    ("shape", "message"),
    [((5,), r"must be a \[batch, seq\] array, got shape \(5,\)"), ((1, 0), "hold no positions")],
)
def test_tokens_of_the_wrong_shape_are_refused(backend, tiny_params, shape, message):
    with pytest.raises(ValueError, match=message):
        backend.apply(
            tiny_params, jnp.zeros(shape, jnp.int32), jnp.zeros(shape, jnp.int32), None, config=TINY
        )


def test_ids_and_positions_outside_the_model_give_nan_in_every_backend(backend, tiny_params):
    """A hand-written decode loop can pass them (the Generator refuses them): JAX's indexing
    would clamp them to the last row, and the logits of another token or position would pass
    for right. The rows that hold them turn NaN; the others are untouched."""
    tokens = jnp.array([[1, 2, TINY.n_vocab], [1, 2, 3], [1, 2, 3]])
    positions = jnp.array([[0, 1, 2], [0, 1, TINY.n_ctx], [0, 1, 2]])
    apply = jax.jit(backend.apply, static_argnames="config")
    logits, _ = apply(tiny_params, tokens, positions, None, config=TINY)
    assert jnp.isnan(logits[:2, 2]).all() and jnp.isfinite(logits[2]).all()
