"""LoRA: every backend's adapters give the reference's loss, gradients and AdamW steps, leave the
base weights untouched, and merge into weights that give the same logits."""

from __future__ import annotations

import functools

import jax
import numpy as np

from conformance.conftest import TINY, compared_with_reference, lively_tree
from conformance.report import max_rel_diff
from shared import lora as lora_lib
from shared import params
from shared.lora import LoraConfig
from shared.lora_backend import lora_backend, with_base
from shared.loss import language_model_loss
from shared.training.config import TrainingConfig
from shared.training.optimizer import make_optimizer
from shared.training.step import make_train_step

TOLERANCE = 1e-5
LORA = LoraConfig(rank=4, alpha=8.0, targets=("c_attn", "attn_c_proj", "c_fc", "mlp_c_proj"))
"""Every target, and a scale (2) other than 1, so a dropped or misplaced scale shows."""
TOKENS = jax.random.randint(jax.random.PRNGKey(4), (2, 17), 0, TINY.n_vocab)
OPTIMIZER = make_optimizer(
    TrainingConfig(learning_rate=1e-3, warmup_iters=0, max_iters=10, grad_clip=0.05)
)
"""The trainer's AdamW (decay mask, clipping low enough to act), which LoRA steps go through."""


@functools.cache
def lively_adapters() -> dict:
    """Adapters as after some training: `b` no longer zero, so the low-rank term counts."""
    fresh = lora_lib.init_adapters(LORA, TINY, jax.random.PRNGKey(1))
    return jax.tree.map(
        lambda x: x + 0.05 * jax.random.normal(jax.random.PRNGKey(2), x.shape), fresh
    )


def _lora_params(backend, adapters=None) -> dict:
    adapters = lively_adapters() if adapters is None else adapters
    return with_base(
        backend.from_canonical(lively_tree(TINY), TINY),
        backend.adapters_from_canonical(adapters, TINY, LORA),
    )


def _logits(backend, backend_params) -> jax.Array:
    return _logits_program(backend)(backend_params)


@functools.cache
def _logits_program(backend):
    """One compiled forward per backend (and per LoRA backend), shared by the tests."""
    positions = np.broadcast_to(np.arange(TOKENS.shape[1]), TOKENS.shape)
    return jax.jit(lambda p: backend.apply(p, TOKENS, positions, None, config=TINY)[0])


@functools.cache
def _loss_and_adapter_grads(backend) -> tuple[float, dict]:
    start = _lora_params(backend)
    model = lora_backend(backend, LORA)
    loss, grads = jax.jit(
        jax.value_and_grad(
            lambda adapters, base: language_model_loss(
                model, with_base(base, adapters), TOKENS, config=TINY
            )
        )
    )(start["adapters"], start["base"])
    return float(loss), params.flatten(backend.adapters_to_canonical(grads, TINY, LORA))


@functools.cache
def _ten_steps(backend) -> tuple[list[float], dict, dict, dict]:
    """(losses, canonical adapters after ten trainer steps, base before, base after)."""
    start = _lora_params(backend)
    base_before = jax.tree.map(np.array, start["base"])
    step = make_train_step(lora_backend(backend, LORA), TINY, OPTIMIZER)
    adapters, opt_state, losses = start["adapters"], OPTIMIZER.init(start["adapters"]), []
    for i in range(10):
        adapters, opt_state, loss, _ = step(adapters, opt_state, TOKENS[None], i, start["base"])
        losses.append(float(loss))
    adapted = params.flatten(backend.adapters_to_canonical(adapters, TINY, LORA))
    return losses, adapted, base_before, start["base"]


def test_fresh_adapters_leave_the_first_forward_exactly_the_base_models(backend):
    fresh = lora_lib.init_adapters(LORA, TINY, jax.random.PRNGKey(1))
    base = backend.from_canonical(lively_tree(TINY), TINY)
    np.testing.assert_array_equal(
        _logits(lora_backend(backend, LORA), _lora_params(backend, fresh)), _logits(backend, base)
    )


@compared_with_reference
def test_lora_loss_and_adapter_gradients_match_the_reference(backend, reference, report):
    (loss, grads), (ref_loss, ref_grads) = map(_loss_and_adapter_grads, (backend, reference))
    report.check("LoRA loss vs functional (relative)", backend.name, "tiny",
                 abs(loss / ref_loss - 1), TOLERANCE)  # fmt: skip
    diff = max_rel_diff([grads[k] for k in ref_grads], list(ref_grads.values()))
    report.check("LoRA adapter gradients vs functional (relative, per tensor)",
                 backend.name, "tiny", diff, TOLERANCE)  # fmt: skip


@compared_with_reference
def test_ten_lora_steps_match_the_reference(backend, reference, report):
    (losses, adapters, *_), (ref_losses, ref_adapters, *_) = map(_ten_steps, (backend, reference))
    curve = max(abs(a / b - 1) for a, b in zip(losses, ref_losses, strict=True))
    report.check("LoRA loss curve over 10 trainer steps vs functional (relative)",
                 backend.name, "tiny", curve, TOLERANCE)  # fmt: skip
    diff = max_rel_diff([adapters[k] for k in ref_adapters], list(ref_adapters.values()))
    report.check("LoRA adapters after 10 trainer steps vs functional (relative)",
                 backend.name, "tiny", diff, TOLERANCE)  # fmt: skip


def test_lora_steps_train_the_adapters_and_leave_the_base_bitwise_unchanged(backend):
    _, adapters, base_before, base_after = _ten_steps(backend)
    start = params.flatten(lively_adapters())
    assert all(not np.array_equal(adapters[k], start[k]) for k in start)
    for before, after in zip(
        jax.tree.leaves(base_before), jax.tree.leaves(base_after), strict=True
    ):
        np.testing.assert_array_equal(np.asarray(after), before)


def test_merged_weights_give_the_logits_of_base_plus_adapters(backend, report):
    model = lora_backend(backend, LORA)
    lora_params = _lora_params(backend)
    merged = backend.from_canonical(model.to_canonical(lora_params, TINY), TINY)
    diff = max_rel_diff(_logits(backend, merged), _logits(model, lora_params))
    report.check("merged LoRA weights' logits vs base + adapters (relative)",
                 backend.name, "tiny", diff, TOLERANCE)  # fmt: skip
