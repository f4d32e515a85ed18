"""AdamW as GPT-2 is trained: warmup + cosine schedule, global-norm clipping, and no weight decay on
biases and LayerNorm parameters."""

from __future__ import annotations

import jax
import optax

from shared.jax_types import PyTree
from shared.training.config import TrainingConfig


def learning_rate_schedule(config: TrainingConfig) -> optax.Schedule:
    """Linear warmup to `learning_rate`, cosine decay to `min_lr` at `decay_iters`, then flat."""
    assert config.min_lr is not None, "TrainingConfig fills in min_lr"
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=config.learning_rate,
        warmup_steps=config.warmup_iters,
        decay_steps=max(config.decay_iters, config.warmup_iters + 1),
        end_value=config.min_lr,
    )


def decay_mask(params: PyTree) -> PyTree:
    """True for matrices (weights, embeddings); False for vectors (biases, LayerNorm scale/shift).

    Every backend holds per-layer parameters, so the rank tells the two apart.
    """
    return jax.tree.map(lambda x: x.ndim >= 2, params)


def make_optimizer(config: TrainingConfig) -> optax.GradientTransformation:
    """AdamW behind global-norm clipping (grad_clip 0 turns clipping off, as in nanoGPT)."""
    return optax.chain(
        optax.clip_by_global_norm(config.grad_clip) if config.grad_clip > 0 else optax.identity(),
        optax.adamw(
            learning_rate_schedule(config),
            b1=config.beta1,
            b2=config.beta2,
            weight_decay=config.weight_decay,
            mask=decay_mask,
        ),
    )
