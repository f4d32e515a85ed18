"""The optimizer against PyTorch's: `torch.optim.AdamW` with a decay and a no-decay parameter group,
`clip_grad_norm_` and a `LambdaLR` schedule, fed the same gradients as the optimizer `gpt2 train`
builds (`make_optimizer`) for ten steps of the tiny model.

Run by `nox -s oracle` (which installs PyTorch) with `--oracle`.
"""

from __future__ import annotations

import jax
import numpy as np
import optax
import torch

from conformance.conftest import TINY, canonical_tree
from conformance.report import max_rel_diff
from shared import params
from shared.loss import language_model_loss
from shared.training.config import TrainingConfig
from shared.training.optimizer import make_optimizer
from tests.support import adamw

STEPS = 10
TOLERANCE = 1e-5
CONFIG = TrainingConfig(
    learning_rate=1e-2, min_lr=2e-3, warmup_iters=3, lr_decay_iters=8, max_iters=STEPS
)
"""Warmup on steps 0-2, cosine on 3-7, min_lr on 8 and 9; grad_clip 1, which the first steps'
gradients exceed."""


def _torch_adamw(
    tree: dict[str, np.ndarray],
) -> tuple[dict, torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
    """float64 copies of the canonical tensors, and PyTorch's AdamW over them: weights and
    embeddings decay, biases and LayerNorm parameters do not."""
    tensors = {path: torch.tensor(x, dtype=torch.float64) for path, x in tree.items()}
    groups = [
        {"params": [t for path, t in tensors.items() if adamw.decays(path) == decays],
         "weight_decay": CONFIG.weight_decay if decays else 0.0}
        for decays in (True, False)
    ]  # fmt: skip
    optimizer = torch.optim.AdamW(
        groups, lr=CONFIG.learning_rate, betas=(CONFIG.beta1, CONFIG.beta2), eps=adamw.EPSILON
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: adamw.learning_rate(CONFIG, step) / CONFIG.learning_rate
    )
    return tensors, optimizer, schedule


def test_ten_steps_match_torch_adamw(backend, report):
    """Each step's gradient is taken at the project's parameters and given to both."""
    optimizer = make_optimizer(CONFIG)

    @jax.jit
    def step(tree, state, tokens):
        grads = jax.grad(language_model_loss, argnums=1)(backend, tree, tokens, config=TINY)
        updates, state = optimizer.update(grads, state, tree)
        return optax.apply_updates(tree, updates), state, grads

    ours = backend.from_canonical(canonical_tree(TINY), TINY)
    state = optimizer.init(ours)
    tensors, theirs, schedule = _torch_adamw(_canonical(backend, ours))
    norms = []
    for i in range(STEPS):
        tokens = jax.random.randint(jax.random.PRNGKey(i), (4, 17), 0, TINY.n_vocab)
        ours, state, grads = step(ours, state, tokens)
        for path, grad in _canonical(backend, grads).items():
            tensors[path].grad = torch.tensor(grad, dtype=torch.float64)
        norms.append(
            float(torch.nn.utils.clip_grad_norm_(list(tensors.values()), CONFIG.grad_clip))
        )
        theirs.step()
        schedule.step()
    assert sum(norm > CONFIG.grad_clip for norm in norms) >= 3, norms
    got = _canonical(backend, ours)
    diff = max_rel_diff([got[k] for k in sorted(got)], [tensors[k].numpy() for k in sorted(got)])
    report.check(f"oracle: params after {STEPS} AdamW steps vs torch.optim.AdamW (relative)",
                 backend.name, "tiny", diff, TOLERANCE)  # fmt: skip


def _canonical(backend, tree) -> dict[str, np.ndarray]:
    flat = params.flatten(backend.to_canonical(tree, TINY))
    return {path: np.asarray(x) for path, x in flat.items()}
