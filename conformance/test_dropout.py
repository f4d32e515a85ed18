"""Dropout: one key gives the same masks in every backend, so the training loss and its gradients
with dropout on agree with the reference as closely as without."""

from __future__ import annotations

import jax

from conformance.conftest import compared_with_reference
from conformance.test_training import _check_loss_and_gradients, _loss_and_canonical_grads, _tokens
from shared.dropout import Dropout
from shared.loss import language_model_loss

DROPOUT = Dropout(0.1, jax.random.PRNGKey(11))


@compared_with_reference
def test_loss_and_gradients_with_dropout_match_the_reference(
    backend, reference, config, config_name, canonical, report, reference_results
):
    tokens = _tokens(config)
    loss, grads = _loss_and_canonical_grads(backend, canonical, config, tokens, DROPOUT)

    def reference_losses():
        plain_loss = jax.jit(lambda p: language_model_loss(reference, p, tokens, config=config))(
            reference.from_canonical(canonical, config)
        )
        return plain_loss, *_loss_and_canonical_grads(reference, canonical, config, tokens, DROPOUT)

    plain_loss, ref_loss, ref_grads = reference_results.get(config_name, reference_losses)
    assert abs(float(ref_loss) - float(plain_loss)) > 1e-4, "dropout 0.1 changed nothing"
    _check_loss_and_gradients(
        report, " with dropout 0.1", backend, config_name, (loss, grads), (ref_loss, ref_grads)
    )
