"""What the backward pass keeps: the shared GELU and attention hold no more than they need, since
their intermediates are as large as a layer's MLP activations or its attention scores, nor does
the loss, whose are as large as the logits."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from shared import attention, kv_cache
from shared.activations import gelu
from shared.loss import next_token_loss


def test_gelu_keeps_only_its_input():
    x = jnp.linspace(-3.0, 3.0, 24).reshape(4, 6)
    _, backward = jax.vjp(gelu, x)
    [kept] = jax.tree.leaves(backward)
    np.testing.assert_array_equal(kept, x)
    (gradient,) = backward(jnp.ones_like(x))
    expected = jax.vmap(jax.grad(lambda v: jax.nn.gelu(v, approximate=True)))(x.ravel())
    np.testing.assert_allclose(gradient.ravel(), expected, atol=1e-6)


def test_attention_gradient_needs_at_most_three_score_sized_buffers():
    """The probabilities and the backward pass's own gradients take about three; the default
    softmax derivative also kept the masked scores and their exponentials (four)."""
    batch, seq, n_head, head_dim = 1, 512, 2, 8
    q, k, v = (jnp.ones((batch, seq, n_head, head_dim)) for _ in range(3))
    mask = attention.attention_mask(None, seq)

    def loss(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
        heads, _ = attention.attend(q, kv_cache.head_rows(k), kv_cache.head_rows(v), mask)
        return jnp.sum(heads)

    compiled = jax.jit(jax.grad(loss, argnums=(0, 1, 2))).lower(q, k, v).compile()
    scores_bytes = batch * n_head * seq * seq * 4
    assert compiled.memory_analysis().temp_size_in_bytes < 3.5 * scores_bytes


def test_loss_gradient_builds_no_vocab_sized_temporaries_beyond_the_fp32_logits():
    """The derivative is softmax minus one-hot, written straight into the gradient; taking the
    target by a gather made it scatter into a zero-filled logits-sized array as well."""
    batch, seq, vocab = 2, 64, 4096
    targets = jnp.zeros((batch, seq), jnp.int32)
    logits_bytes = batch * seq * vocab * 4
    for dtype, fp32_copies in ((jnp.float32, 0), (jnp.bfloat16, 1)):
        logits = jnp.ones((batch, seq, vocab), dtype)
        compiled = jax.jit(jax.grad(next_token_loss)).lower(logits, targets).compile()
        temporaries = compiled.memory_analysis().temp_size_in_bytes
        assert temporaries < (fp32_copies + 0.5) * logits_bytes, dtype
