"""AdamW as the papers write it, in float64 numpy: the reference the trainers' optimizer is held to.

Decoupled weight decay (Loshchilov & Hutter, "Decoupled Weight Decay Regularization", Algorithm 2)
over Adam's bias-corrected moments (Kingma & Ba), after clipping the mean of the micro-batches'
gradients to a global norm, at nanoGPT's learning rate: linear warmup from 0, cosine decay to
min_lr, then flat. Only the hyperparameters come from the project (`TrainingConfig`); nothing
here calls optax, Keras or the library's optimizer, so a slip there cannot hide in both.

Parameters are addressed by their canonical paths (`shared.params.flatten`), whose names say which
decay: weights and embeddings do, biases and LayerNorm gains and shifts do not.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np

from shared.training.config import TrainingConfig

Tree = Mapping[str, np.ndarray]
"""Flat canonical tree: `{"blocks/attn/c_attn/w": array, ...}`."""

EPSILON = 1e-8
"""Adam's epsilon as the project configures it (optax's, PyTorch's and Keras-in-`fit`'s value)."""

Epsilon = Literal["sqrt_v_hat", "sqrt_v"]
"""Where epsilon is added: to sqrt(v_hat), after the bias correction (optax, PyTorch, the paper's
Algorithm 1), or to sqrt(v) before it (Keras: Kingma & Ba's "epsilon hat", which amounts to
epsilon / sqrt(1 - beta2^t) added to sqrt(v_hat))."""


def learning_rate(config: TrainingConfig, step: int) -> float:
    """The rate of update `step` (0-based): `learning_rate * step / warmup_iters` while warming up,
    then half a cosine from `learning_rate` down to `min_lr` at `decay_iters`, then `min_lr`."""
    assert config.min_lr is not None, "TrainingConfig fills in min_lr"
    if step < config.warmup_iters:
        return config.learning_rate * step / config.warmup_iters
    if step >= config.decay_iters:
        return config.min_lr
    progress = (step - config.warmup_iters) / (config.decay_iters - config.warmup_iters)
    cosine = 0.5 * (1 + math.cos(math.pi * progress))
    return config.min_lr + cosine * (config.learning_rate - config.min_lr)


def decays(path: str) -> bool:
    """Whether weight decay applies to the canonical tensor `path`: matrices (weights, embeddings)
    do; biases (`b`) and LayerNorm gains (`g`) do not."""
    return path.rsplit("/", 1)[-1] not in ("b", "g")


def global_norm(grads: Tree) -> float:
    """The L2 norm of all the gradients together, as one vector."""
    return math.sqrt(sum(float(np.sum(np.square(g, dtype=np.float64))) for g in grads.values()))


class AdamW:
    """The optimizer's state (float64 parameters and moments) and its step.

    Args:
        config: the run's hyperparameters: learning rates, warmup and decay iterations, betas,
            weight decay, grad_clip (0: no clipping).
        params: the starting parameters, flat canonical.
        epsilon: where Adam's epsilon goes (`Epsilon`).
    """

    def __init__(
        self, config: TrainingConfig, params: Tree, epsilon: Epsilon = "sqrt_v_hat"
    ) -> None:
        self.config, self.epsilon = config, epsilon
        self.params = {k: np.asarray(v, np.float64) for k, v in params.items()}
        self.m = {k: np.zeros_like(v) for k, v in self.params.items()}
        self.v = {k: np.zeros_like(v) for k, v in self.params.items()}
        self.steps = 0

    def step(self, micro_grads: Sequence[Tree], norm: float | None = None) -> float:
        """One update from the gradients of each micro-batch; returns the global norm of their
        mean before clipping (what a trainer logs as grad_norm).

        `norm` gives that norm instead, where the trees hold only some elements of each tensor:
        apart from the norm, AdamW treats every element on its own.
        """
        config = self.config
        grads = {
            k: np.mean([np.asarray(g[k], np.float64) for g in micro_grads], axis=0)
            for k in self.params
        }
        norm = global_norm(grads) if norm is None else norm
        scale = config.grad_clip / norm if 0 < config.grad_clip < norm else 1.0
        lr, t = learning_rate(config, self.steps), self.steps + 1
        correction1, correction2 = 1 - config.beta1**t, 1 - config.beta2**t
        for k, p in self.params.items():
            g = grads[k] * scale
            self.m[k] = config.beta1 * self.m[k] + (1 - config.beta1) * g
            self.v[k] = config.beta2 * self.v[k] + (1 - config.beta2) * g**2
            m_hat, v_hat = self.m[k] / correction1, self.v[k] / correction2
            if self.epsilon == "sqrt_v_hat":
                adam = m_hat / (np.sqrt(v_hat) + EPSILON)
            else:
                adam = m_hat / ((np.sqrt(self.v[k]) + EPSILON) / math.sqrt(correction2))
            decay = config.weight_decay * p if decays(k) else 0.0
            self.params[k] = p - lr * (adam + decay)
        self.steps += 1
        return norm
