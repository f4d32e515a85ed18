"""The next-token (language modelling) loss, written once against the backend contract."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from shared.apply_options import ApplyOptions
from shared.backend import Backend
from shared.config import GPT2Config


def target_log_probs(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """Log-probability [batch, seq] of each of `targets` under `logits` [batch, seq, vocab], in
    fp32 whatever the logits' dtype.

    The target's logit is picked by a masked sum, not a gather: the derivative is then one
    elementwise pass over the logits (softmax minus one-hot) instead of a scatter into a
    zero-filled [batch, seq, vocab] array, and no [batch, seq, vocab] log-softmax is kept: the
    train step needs less temporary memory, and the loss's own forward and backward run faster.
    A target outside the vocabulary gives NaN, not a log-probability that looks real.
    """
    logits = logits.astype(jnp.float32)
    vocab = logits.shape[-1]
    is_target = jnp.arange(vocab) == targets[..., None]
    target_logits = jnp.sum(jnp.where(is_target, logits, 0.0), axis=-1)
    in_vocabulary = (targets >= 0) & (targets < vocab)
    return jnp.where(in_vocabulary, target_logits - jax.nn.logsumexp(logits, axis=-1), jnp.nan)


def next_token_loss(
    logits: jax.Array, targets: jax.Array, mask: jax.Array | None = None
) -> jax.Array:
    """Mean cross-entropy of `targets` [batch, seq] under `logits` [batch, seq, vocab] (fp32).

    `mask` [batch, seq] excludes positions (e.g. padding) from the mean.
    """
    nll = -target_log_probs(logits, targets)
    if mask is None:
        return jnp.mean(nll)
    mask = mask.astype(jnp.float32)
    return jnp.sum(nll * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def language_model_loss(
    backend: Backend,
    params: Any,
    tokens: jax.Array,
    *,
    config: GPT2Config,
    options: ApplyOptions = ApplyOptions(),
) -> jax.Array:
    """Loss of predicting tokens[:, 1:] from tokens[:, :-1] with the training forward pass.

    `options` (training only: dropout, remat) are passed to the backend; the default evaluates.
    They must ask for the logits of every position, which the loss reads.
    """
    if options.output != "logits" or options.last_only:
        raise ValueError(
            "The loss reads the logits of every position; its options cannot ask for last_only "
            f"or another output, got last_only={options.last_only}, output={options.output!r}."
        )
    inputs, targets = tokens[:, :-1], tokens[:, 1:]
    positions = jnp.broadcast_to(jnp.arange(inputs.shape[1]), inputs.shape)
    logits, _ = backend.apply(params, inputs, positions, None, config=config, options=options)
    return next_token_loss(logits, targets)
