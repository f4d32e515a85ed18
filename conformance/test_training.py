"""Training: loss, gradients and ten optax AdamW steps agree with the reference in canonical form."""

from __future__ import annotations

import jax
import optax
import pytest

from conformance.report import max_rel_diff
from shared import params
from shared.loss import language_model_loss

TOLERANCE = 1e-5


def _tokens(config, batch=2, length=33):
    return jax.random.randint(jax.random.PRNGKey(4), (batch, length), 0, config.n_vocab)


def _loss_and_canonical_grads(backend, tree, config, tokens):
    backend_params = backend.from_canonical(tree, config)
    loss, grads = jax.jit(
        lambda p: jax.value_and_grad(language_model_loss, argnums=1)(
            backend, p, tokens, config=config
        )
    )(backend_params)
    return loss, params.flatten(backend.to_canonical(grads, config))


def test_loss_and_gradients_match_the_reference(
    backend, reference, config, config_name, canonical, report
):
    tokens = _tokens(config)
    loss, grads = _loss_and_canonical_grads(backend, canonical, config, tokens)
    ref_loss, ref_grads = _loss_and_canonical_grads(reference, canonical, config, tokens)
    report.check(
        "loss vs functional (relative)",
        backend.name,
        config_name,
        abs(float(loss) / float(ref_loss) - 1),
        TOLERANCE,
    )
    diff = max_rel_diff([grads[k] for k in ref_grads], list(ref_grads.values()))
    report.check(
        "gradients vs functional (relative, per tensor)", backend.name, config_name, diff, TOLERANCE
    )


def _adamw_steps(backend, tree, config, tokens, steps=10):
    optimizer = optax.adamw(1e-3, weight_decay=0.1)

    @jax.jit
    def step(backend_params, state):
        grads = jax.grad(language_model_loss, argnums=1)(
            backend, backend_params, tokens, config=config
        )
        updates, state = optimizer.update(grads, state, backend_params)
        return optax.apply_updates(backend_params, updates), state

    backend_params = backend.from_canonical(tree, config)
    state = optimizer.init(backend_params)
    for _ in range(steps):
        backend_params, state = step(backend_params, state)
    return params.flatten(backend.to_canonical(backend_params, config))


@pytest.mark.parametrize("config_name", ["tiny", "124M"], indirect=False)
def test_ten_adamw_steps_match_the_reference(backend, reference, config_name, report):
    from conformance.conftest import CONFIGS, canonical_tree

    config = CONFIGS[config_name]
    tree, tokens = canonical_tree(config), _tokens(config, batch=1, length=17)
    got = _adamw_steps(backend, tree, config, tokens)
    expected = _adamw_steps(reference, tree, config, tokens)
    diff = max_rel_diff([got[k] for k in expected], list(expected.values()))
    report.check(
        "params after 10 AdamW steps vs functional (relative)",
        backend.name,
        config_name,
        diff,
        TOLERANCE,
    )
