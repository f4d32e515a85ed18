"""The trainers' optimizer against AdamW written from the papers in numpy (`tests.support.adamw`),
not against optax: ten steps of `gpt2 train` per backend, two updates at the 124M shapes, and
Keras `fit`. A wrong epsilon, clipping per tensor, an inverted decay mask, a shifted schedule or
summed micro-batches each move the parameters off the reference."""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conformance.conftest import CONFIGS, REFERENCE
from conformance.report import max_rel_diff
from conformance.test_training import _without_key_bias
from shared import params
from shared.backend import Backend, backend_names, get_backend
from shared.config import GPT2Config
from shared.loss import language_model_loss
from shared.training.config import TrainingConfig
from shared.training.optimizer import learning_rate_schedule, make_optimizer
from shared.training.trainer import Trainer, stream_key
from shared.training.trainers import trainer_for
from tests.support import adamw
from tests.support.corpus import prepared_characters

TOLERANCE = 1e-5
STEPS = 10
EPSILON_PLACEMENT_BOUND = 5e-3
"""Where gradients are about as small as epsilon (attention's query and key weights at
initialisation), Keras' epsilon, up to 1 / sqrt(1 - beta2) times optax's, changes the steps."""


@pytest.fixture(scope="module")
def char_data(tmp_path_factory):
    return prepared_characters(tmp_path_factory.mktemp("optimizer_data"), 20_000)


def _run_config(data_dir, out_dir, **overrides) -> TrainingConfig:
    """Ten steps through every phase of the schedule (warmup on steps 0-2, cosine on 3-7, min_lr
    on 8 and 9) with two micro-batches each. grad_clip lies among the gradient norms, so it clips
    the first steps and not the last: a sum of micro-batches, clipped to the same norm as their
    mean, would show only on steps that are not clipped."""
    return TrainingConfig(
        data_dir=str(data_dir), out_dir=str(out_dir), n_layer=1, n_head=2, n_embd=32,
        block_size=16, batch_size=4, gradient_accumulation_steps=2, max_iters=STEPS,
        warmup_iters=3, lr_decay_iters=8, learning_rate=1e-2, min_lr=2e-3, grad_clip=1.0,
        **overrides,
    )  # fmt: skip


def _canonical(backend: Backend, tree, model_config: GPT2Config) -> dict[str, np.ndarray]:
    flat = params.flatten(backend.to_canonical(tree, model_config))
    return {path: np.array(value) for path, value in flat.items()}  # copies: steps donate


def _gradient(backend: Backend, config: TrainingConfig, model_config: GPT2Config) -> Callable:
    """(backend params, micro-batch) -> canonical gradient of its loss, with the arithmetic in
    config.compute_dtype over fp32 weights: what the step differentiates, apart from how it
    accumulates micro-batches."""
    dtype = jnp.dtype(config.compute_dtype)

    def loss(tree, batch):
        return language_model_loss(backend, params.cast(tree, dtype), batch, config=model_config)

    grad = jax.jit(jax.grad(loss))
    return lambda tree, batch: _canonical(backend, grad(tree, batch), model_config)


def _check_clipping(config: TrainingConfig, norms: list[float]) -> None:
    clipped = sum(norm > config.grad_clip for norm in norms)
    assert 3 <= clipped <= len(norms) - 3, (
        f"grad_clip {config.grad_clip} must clip some steps and leave others; norms {norms}"
    )


def _compare(a: dict, b: dict) -> float:
    return max_rel_diff([a[k] for k in sorted(b)], [b[k] for k in sorted(b)])


# bf16 compute on the reference backend only: the cast over fp32 master weights is the shared
# step's, whatever the backend, and each case costs a compile of the step.
@pytest.mark.parametrize(
    ("backend", "compute_dtype"),
    [*((name, "float32") for name in backend_names()), (REFERENCE, "bfloat16")],
    indirect=["backend"],
)
def test_ten_steps_of_gpt2_train_match_the_numpy_adamw(
    backend, compute_dtype, char_data, tmp_path, report
):
    """The trainer `gpt2 train` builds, step by step. The reference is fed each micro-batch's
    gradient at the trainer's parameters (the gradients the step uses; in bf16, parameters one
    fp32 rounding apart round to different bf16 weights, which Adam would amplify), averages them
    itself, and keeps its own float64 parameters and moments."""
    config = _run_config(char_data, tmp_path, backend=backend.name, compute_dtype=compute_dtype)
    trainer = trainer_for(config)
    assert isinstance(trainer, Trainer)
    backend, model_config = trainer.backend, trainer.model_config
    gradient = _gradient(backend, config, model_config)
    reference = adamw.AdamW(config, _canonical(backend, trainer.state.params, model_config))
    norms, logged_norms = [], []
    for step in range(STEPS):
        micro_grads = [gradient(trainer.state.params, batch) for batch in trainer.batches(step)]
        norms.append(reference.step(micro_grads))
        logged_norms.append(float(trainer.step()[1]))
    _check_clipping(config, norms)
    setting = f"tiny, {compute_dtype}"
    final = _canonical(backend, trainer.state.params, model_config)
    report.check(f"train step: params after {STEPS} steps vs numpy AdamW (relative)",
                 backend.name, setting, _compare(final, reference.params), TOLERANCE)  # fmt: skip
    norm_diff = max(
        abs(ours / theirs - 1) for ours, theirs in zip(logged_norms, norms, strict=True)
    )
    report.check("train step: grad_norm vs numpy global norm (relative)", backend.name, setting,
                 norm_diff, TOLERANCE)  # fmt: skip


def test_the_schedule_warms_up_then_decays_to_min_lr():
    config = _run_config("unused", "unused")
    schedule = learning_rate_schedule(config)
    for step in range(STEPS + 3):
        assert float(schedule(step)) == pytest.approx(adamw.learning_rate(config, step), rel=1e-6)


BIG = CONFIGS["124M"]
SAMPLED = 1000
"""Elements of each 124M tensor the reference follows (AdamW is elementwise but for the norm)."""


@pytest.fixture(scope="module")
def updates_at_124m():
    """(config, canonical params, two gradient trees, sampled element indices per tensor, the
    reference's parameters at those elements after the two updates, the gradients' norms)."""
    config = TrainingConfig(learning_rate=6e-4, min_lr=6e-5, warmup_iters=0, lr_decay_iters=2,
                            max_iters=2)  # fmt: skip
    rng = np.random.default_rng(0)
    shapes = params.canonical_shapes(BIG)
    tree, *grads = (
        {path: scale * (rng.random(shape, np.float32) - 0.5) for path, shape in shapes.items()}
        for scale in (0.05, 4e-3, 4e-3)
    )
    picks = {path: rng.integers(0, math.prod(shape), SAMPLED) for path, shape in shapes.items()}

    def sample(flat):
        return {path: np.asarray(x).reshape(-1)[picks[path]] for path, x in flat.items()}

    reference = adamw.AdamW(config, sample(tree))
    norms = [adamw.global_norm(g) for g in grads]
    for g, norm in zip(grads, norms, strict=True):
        reference.step([sample(g)], norm)
    return config, tree, grads, sample, reference.params, norms


def test_two_updates_at_124m_match_the_numpy_adamw(reference, updates_at_124m, report):
    """The optimizer `gpt2 train` builds, on the reference backend's 124M tree (the tiny runs
    cover each backend's own tree), from given gradients whose global norm, 13, is clipped to 1;
    the numpy AdamW follows a sample of every tensor."""
    backend = reference
    config, tree, grads, sample, expected, norms = updates_at_124m
    assert min(norms) > config.grad_clip
    optimizer = make_optimizer(config)
    update = jax.jit(lambda p, state, g: _apply(optimizer, p, state, g))
    ours = backend.from_canonical(params.unflatten(tree), BIG)
    state = optimizer.init(ours)
    for g in grads:
        ours, state = update(ours, state, backend.from_canonical(params.unflatten(g), BIG))
    got = sample(params.flatten(backend.to_canonical(ours, BIG)))
    report.check("optimizer: params after 2 updates vs numpy AdamW (relative, sampled)",
                 backend.name, "124M", _compare(got, expected), TOLERANCE)  # fmt: skip


def _apply(optimizer, tree, state, grads):
    updates, state = optimizer.update(grads, state, tree)
    return optax.apply_updates(tree, updates), state


def test_keras_fit_matches_the_numpy_adamw_with_keras_epsilon(char_data, tmp_path, report):
    """`gpt2 train --keras-fit`, whose Keras AdamW adds epsilon to sqrt(v) before the bias
    correction (`adamw.Epsilon`). `fit` takes its ten steps in one go, so the reference takes
    each gradient at its own parameters: in fp32 they stay within rounding of fit's, but for the
    key part of c_attn's bias, whose gradient is rounding noise (`KEY_BIAS_NOTE`). The same
    gradients through optax's placement bound how far the two trainers' AdamW differ."""
    config = _run_config(char_data, tmp_path, backend="keras", keras_fit=True, eval_iters=1,
                         log_interval=STEPS, eval_interval=STEPS, save_interval=STEPS)  # fmt: skip
    convert = pytest.importorskip("keras_impl.convert")
    run = trainer_for(config)
    keras, model_config = get_backend("keras"), run.model_config
    start = _canonical(keras, convert.model_params(run.model), model_config)
    run.run()
    final = _canonical(keras, convert.model_params(run.model), model_config)
    gradient = _gradient(keras, config, model_config)
    keras_epsilon = adamw.AdamW(config, start, "sqrt_v")
    optax_epsilon = adamw.AdamW(config, start, "sqrt_v_hat")
    norms = []
    for step in range(STEPS):
        current = {path: x.astype(np.float32) for path, x in keras_epsilon.params.items()}
        at = keras.from_canonical(params.unflatten(current), model_config)
        micro_grads = [
            gradient(at, batch) for batch in _micro_batches(run.train_data, config, step)
        ]
        norms.append(keras_epsilon.step(micro_grads))
        optax_epsilon.step(micro_grads)
    _check_clipping(config, norms)
    diff = max_rel_diff(_without_key_bias(final, model_config),
                        _without_key_bias(keras_epsilon.params, model_config))  # fmt: skip
    report.check(f"keras fit: params after {STEPS} steps vs numpy AdamW, Keras' epsilon "
                 "(relative, key bias excluded)", "keras", "tiny, float32", diff, TOLERANCE)  # fmt: skip
    placement = _compare(keras_epsilon.params, optax_epsilon.params)
    report.check(f"numpy AdamW after {STEPS} steps: Keras' epsilon vs optax's (relative)", "keras",
                 "tiny, float32", placement, EPSILON_PLACEMENT_BOUND)  # fmt: skip


def _micro_batches(data, config: TrainingConfig, step: int) -> list[np.ndarray]:
    """Step `step`'s micro-batches as both trainers draw them: batch step * A + i of the train
    stream, for A micro-batches."""
    accumulation = config.gradient_accumulation_steps
    return [
        data.batch(stream_key(config.seed, 1), step * accumulation + i, config.batch_size)
        for i in range(accumulation)
    ]
