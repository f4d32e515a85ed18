"""keras_impl.fit (`gpt2 train --keras-fit`): Keras `fit` trains on the shared trainer's batches and
dropout masks, resumes exactly after SIGTERM from the shared checkpoints, which the shared readers
load, and follows the shared schedule."""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import keras
import numpy as np
import pytest

from keras_impl import convert
from keras_impl.backend import backend
from keras_impl.fit import DropoutLM, KerasFit, SharedSchedule, make_optimizer_for
from keras_impl.model import GPT2LM
from shared import data, weights
from shared.config import GPT2Config
from shared.errors import GPT2Error
from shared.training import checkpoints
from shared.training.config import TrainingConfig
from shared.training.optimizer import learning_rate_schedule
from shared.training.trainer import Trainer
from shared.weights import runs
from tests.support import metrics
from tests.support.corpus import prepared_characters
from tests.support.paths import BPE_DIR, TINY_SHAKESPEARE

TINY = {"n_layer": 2, "n_head": 2, "n_embd": 32, "block_size": 32}


@pytest.fixture(scope="module")
def char_data(tmp_path_factory):
    return prepared_characters(tmp_path_factory.mktemp("kfit"), 20_000)


def _config(data_dir, out_dir, /, **overrides) -> TrainingConfig:
    values = {"data_dir": str(data_dir), "out_dir": str(out_dir), "backend": "keras", "keras_fit": True,
              "batch_size": 4, "max_iters": 40, "learning_rate": 3e-3, "min_lr": 3e-4, "warmup_iters": 5,
              "eval_interval": 10, "eval_iters": 2, "log_interval": 2, "save_interval": 10,
              "dropout": 0.1, "gradient_accumulation_steps": 2, **TINY}  # fmt: skip
    return TrainingConfig(**{**values, **overrides})


@pytest.fixture(scope="module")
def straight(char_data, tmp_path_factory):
    """A finished 40-iteration run with dropout and accumulation: (out_dir, the KerasFit)."""
    out = tmp_path_factory.mktemp("straight")
    run = KerasFit(_config(char_data, out))
    run.run()
    return out, run


def _train_command(config: TrainingConfig, *extra: str) -> list[str]:
    flags = [f"--{k}={v}" for k, v in config.to_dict().items() if v is not None and not isinstance(v, bool)]  # fmt: skip
    return [sys.executable, "-m", "gpt2", "train", *flags, "--keras-fit", *extra]


def test_fit_lowers_the_loss_and_logs_every_interval(straight):
    out, _ = straight
    records = metrics.records(out)
    assert sorted(records) == list(range(2, 41, 2))
    assert [i for i, r in records.items() if "val_loss" in r] == [10, 20, 30, 40]
    assert records[40]["train_loss"] < records[2]["train_loss"] - 0.5
    assert records[40]["val_loss"] < records[10]["val_loss"]
    _, meta = checkpoints.read_meta(out, checkpoints.BEST)
    assert meta["best_val_loss"] == min(r["val_loss"] for r in records.values() if "val_loss" in r)


@pytest.mark.slow
def test_the_first_iteration_sees_the_shared_trainers_batches_and_dropout_masks(
    char_data, tmp_path
):
    one = {"max_iters": 1, "warmup_iters": 0, "eval_interval": 1, "log_interval": 1, "save_interval": 1,
           "eval_iters": 1}  # fmt: skip
    keras_fit = KerasFit(_config(char_data, tmp_path / "fit", **one)).run()
    shared = Trainer(_config(char_data, tmp_path / "shared", keras_fit=False, **one)).run()
    assert keras_fit["train_loss"] == shared["train_loss"]  # the loss before the first update
    assert keras_fit["val_loss"] == pytest.approx(shared["val_loss"], abs=1e-5)


def test_the_dropout_model_drops_out_only_on_training_batches():
    """On plain tokens (evaluation, generation) `DropoutLM` is `GPT2LM`; only a training batch,
    which carries its micro-step, drops out."""
    config = GPT2Config(n_embd=32, n_head=4, n_layer=2, n_vocab=64, n_ctx=16)
    model, plain = DropoutLM(config, 0.5, jax.random.PRNGKey(0)), GPT2LM(config)
    plain.set_weights(model.get_weights())
    tokens = np.arange(16)[None, :]
    np.testing.assert_array_equal(model(tokens), plain(tokens))
    batch = {"tokens": tokens, "micro_step": np.zeros(1, np.int32)}
    assert not np.array_equal(model(batch), plain(tokens))


@pytest.mark.slow
def test_fit_with_remat_trains_the_run_it_would_train_without(straight, char_data, tmp_path):
    """The first four iterations (all in warmup, so the shorter run's schedule is the same)."""
    short = {"max_iters": 4, "eval_interval": 2, "save_interval": 2}
    run = KerasFit(_config(char_data, tmp_path, remat=True, **short))
    run.run()
    assert run.model.remat
    records, plain = metrics.records(tmp_path), metrics.records(straight[0])
    for step in (2, 4):
        assert records[step]["train_loss"] == pytest.approx(plain[step]["train_loss"], rel=1e-5)


def test_the_checkpoint_loads_for_inference_with_the_trained_models_logits(straight):
    out, run = straight
    tree, model_config, meta = runs.load_for_inference(out)
    assert meta["step"] == 40 and meta["backend"] == "keras" and meta["training"]["keras_fit"]
    tokens = jax.random.randint(jax.random.PRNGKey(0), (2, 16), 0, model_config.n_vocab)
    positions = jnp.broadcast_to(jnp.arange(16), tokens.shape)
    logits, _ = backend.apply(
        backend.from_canonical(tree, model_config), tokens, positions, None, config=model_config
    )
    np.testing.assert_allclose(logits, run.model(tokens), rtol=0, atol=1e-6)


@pytest.mark.slow
def test_a_keras_fit_run_killed_by_sigterm_resumes_exactly(straight, char_data, tmp_path):
    out = tmp_path / "resumed"
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    process = subprocess.Popen(
        _train_command(_config(char_data, out)), env=env, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 240
    while not ((out / "metrics.jsonl").is_file() and max(metrics.records(out), default=0) >= 10):
        assert process.poll() is None and time.monotonic() < deadline, process.stderr.read()
        time.sleep(0.02)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, stderr
    stopped_at = checkpoints.latest_step(out)
    assert 10 <= stopped_at < 40, stderr
    assert metrics.logged_iters(out) == list(range(2, stopped_at + 1, 2))
    subprocess.run(
        [sys.executable, "-m", "gpt2", "train", "--init-from", "resume", "--out-dir", str(out)],
        env=env, check=True, capture_output=True, timeout=240,
    )  # fmt: skip
    assert metrics.logged_iters(out) == list(range(2, 41, 2))  # continued, not repeated
    assert metrics.losses(out) == metrics.losses(straight[0])
    (a, _, meta_a), (b, _, meta_b) = (
        runs.load_for_inference(straight[0]),
        runs.load_for_inference(out),
    )
    assert meta_a["step"] == meta_b["step"] == 40
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # inside Keras
def test_a_fit_model_with_dropout_saves_and_loads_back(straight, tmp_path):
    model = straight[1].model
    model.save(tmp_path / "fit.keras")
    loaded = keras.models.load_model(tmp_path / "fit.keras")
    assert type(loaded) is type(model) and (loaded.rate, loaded.config) == (0.1, model.config)
    np.testing.assert_array_equal(loaded.key, model.key)
    tokens = jnp.arange(16)[None, :]
    np.testing.assert_array_equal(loaded(tokens), model(tokens))


@pytest.mark.slow
def test_fit_and_the_shared_trainer_take_turns_on_one_run(straight, char_data, tmp_path):
    """One record of the run (the orbax checkpoints): fit continues what the shared trainer
    continued, with another accumulation, from the model and AdamW moments it saved."""
    out = tmp_path / "turns"
    shutil.copytree(straight[0], out)
    Trainer(_config(char_data, out, init_from="resume", keras_fit=False, max_iters=44)).run()
    run = KerasFit(
        _config(char_data, out, init_from="resume", max_iters=48, gradient_accumulation_steps=1)
    )
    saved = runs.load_for_inference(out)[0]
    model = backend.from_canonical(saved, run.model_config)
    for variable in run.model.trainable_variables:
        np.testing.assert_array_equal(
            variable.value, model[convert.variable_path(run.model, variable)]
        )
    assert int(run.model.optimizer.iterations) == 44
    assert run.run()["iter"] == 48
    records = metrics.records(out)
    assert sorted(i for i in records if i > 40) == [42, 44, 46, 48]
    assert records[48]["train_loss"] < records[2]["train_loss"]


@pytest.mark.parametrize("accumulation", [1, 3])
def test_the_keras_schedule_is_the_shared_schedule(accumulation):
    config = TrainingConfig(learning_rate=1e-3, min_lr=1e-4, warmup_iters=100, max_iters=2000,
                            gradient_accumulation_steps=accumulation)  # fmt: skip
    keras_schedule, shared = SharedSchedule(config.to_dict()), learning_rate_schedule(config)
    for step in (0, 1, 50, 99, 100, 101, 1000, 1999, 2000, 2500):
        for micro in range(accumulation):  # Keras counts micro-batches
            assert float(keras_schedule(step * accumulation + micro)) == float(shared(step))
    restored = SharedSchedule.from_config(keras_schedule.get_config())
    assert float(restored(123 * accumulation)) == float(shared(123))


def test_adamw_decays_matrices_only_and_clips_and_accumulates(straight):
    _, run = straight
    config = run.config.replace(gradient_accumulation_steps=4, grad_clip=0.5, beta2=0.99)
    optimizer = make_optimizer_for(run.model, config)
    undecayed = sorted(v.path.split("/", 1)[1] for v in run.model.trainable_variables
                       if not optimizer._use_weight_decay(v))  # fmt: skip
    assert undecayed == sorted(
        p
        for p in backend.init(run.model_config, jax.random.PRNGKey(0))
        if "kernel" not in p and "embeddings" not in p
    )
    assert (optimizer.global_clipnorm, optimizer.gradient_accumulation_steps) == (0.5, 4)
    assert (optimizer.beta_1, optimizer.beta_2, optimizer.weight_decay) == (0.9, 0.99, 0.1)


@pytest.mark.parametrize(
    ("in_the_finished_run", "overrides", "message"),
    [
        (True, {}, "already holds a training run's checkpoints; continue it with --init-from"),
        (False, {"max_iters": 41}, "max_iters must be a multiple of 2; got 41"),
        (False, {"mesh": "data=1"}, "--keras-fit trains on one device; drop --mesh"),
        (False, {"num_processes": 2, "process_id": 0, "coordinator": "127.0.0.1:1"},
         "--keras-fit trains on one device; drop --mesh and the multi-process flags"),
        (True, {"init_from": "resume", "log_interval": 6, "eval_interval": 12, "save_interval": 12,
                "max_iters": 48}, "is at iter 40, not at the end of a Keras epoch of 6 iterations"),
    ],
)  # fmt: skip
def test_runs_that_keras_cannot_continue_exactly_are_refused(
    straight, char_data, tmp_path, in_the_finished_run, overrides, message
):
    out = straight[0] if in_the_finished_run else tmp_path
    with pytest.raises(GPT2Error, match=message):
        KerasFit(_config(char_data, out, **overrides))


def test_eval_only_of_a_fit_run_evaluates_it_with_the_shared_trainer(straight, char_data):
    with pytest.raises(GPT2Error, match="eval_only evaluates with the shared trainer"):
        KerasFit(_config(char_data, straight[0], eval_only=True))
    result = subprocess.run(
        [sys.executable, "-m", "gpt2", "train", "--init-from", "resume", "--eval-only",
         "--out-dir", str(straight[0])],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("iter 40: train_loss=")
    val_loss = float(result.stdout.split("val_loss=")[1].split()[0])
    assert abs(val_loss - metrics.losses(straight[0])[40][1]) < 2e-4  # printed to 4 decimals


@pytest.mark.skipif(
    importlib.util.find_spec("tensorflow") is None,
    reason="the OpenAI checkpoint fixture needs TensorFlow",
)
def test_fine_tuning_openai_weights_with_fit(openai_server, tmp_path, monkeypatch):
    monkeypatch.setenv("GPT2_BASE_URL", openai_server.base_url)
    monkeypatch.setenv("GPT2_MODELS_DIR", str(tmp_path / "models"))
    (tmp_path / "text.txt").write_text(TINY_SHAKESPEARE.read_text()[:5_000])
    data.prepare([tmp_path / "text.txt"], tmp_path / "data", "gpt2", bpe_dir=BPE_DIR)
    config = _config(tmp_path / "data", tmp_path / "ft", init_from="124M", max_iters=2, eval_interval=2,
                     learning_rate=1e-4, min_lr=1e-5, warmup_iters=0, dropout=0.0)  # fmt: skip
    start, _, _ = weights.load_pretrained("124M")
    KerasFit(config).run()
    tree, model_config, _ = runs.load_for_inference(tmp_path / "ft")
    assert model_config.n_ctx == 32 and model_config.n_vocab == 50257
    moved = np.abs(tree["blocks"]["mlp"]["c_fc"]["w"] - start["blocks"]["mlp"]["c_fc"]["w"]).max()
    assert 0 < moved < 0.01
