"""Greedy continuations computed from a model's plain forward pass, as a reference for `generate`.

No KV cache, no padded prompt buckets, no decode loop and no segment planning: each token is the
argmax of the training forward (`cache=None`) over exactly the tokens it is given, so what the
library's generation promises can be checked against a loop simple enough to read.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import numpy as np

from shared.tokenizer import EOT_ID


def greedy_tokens(model, context: Sequence[int], n_new: int) -> list[int]:
    """The `n_new` greedy tokens after `context` (fewer if `<|endoftext|>` comes, which is
    left out), the model seeing `context` and what it generated from position 0 on.

    `model` is a `shared.api.GPT2`; context + n_new must fit its n_ctx.
    """
    n_ctx = model.config.n_ctx
    assert len(context) > 0 and len(context) + n_new <= n_ctx, (len(context), n_new, n_ctx)
    logits = _forward(model)
    ids, new = list(context), []
    for _ in range(n_new):
        padded = np.zeros((1, n_ctx), np.int32)
        padded[0, : len(ids)] = ids
        token = int(np.argmax(np.asarray(logits(padded))[0, len(ids) - 1]))
        if token == EOT_ID:
            break
        ids.append(token)
        new.append(token)
    return new


@functools.cache
def _forward(model):
    """The model's causal forward at its full context length, compiled once per model: pads on
    the right change nothing before them."""
    positions = np.arange(model.config.n_ctx, dtype=np.int32)[None]
    apply = jax.jit(
        lambda params, tokens: model.backend.apply(
            params, tokens, positions, None, config=model.config
        )[0]
    )
    return functools.partial(apply, model.params)
