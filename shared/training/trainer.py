"""The training loop, written once over the backend contract, so every backend trains the same way.

Each iteration draws its batches from (seed, step), runs one jitted step with donated buffers, and
every interval logs, evaluates on val, and checkpoints. SIGTERM or Ctrl-C saves and exits; a
non-finite loss stops the run before anything bad is saved. Resume continues bit-for-bit.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import signal
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from shared import weights
from shared.backend import Backend, get_backend
from shared.config import GPT2Config
from shared.data import TokenDataset
from shared.errors import GPT2Error
from shared.loss import language_model_loss
from shared.params import cast
from shared.training import checkpoints
from shared.training.config import TrainingConfig
from shared.training.metrics import PEAK_FLOPS, MetricsLog, console_line, flops_per_token
from shared.training.optimizer import learning_rate_schedule, make_optimizer

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


@jax.jit
def _all_finite(tree: Any) -> jax.Array:
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def resume_config(out_dir: str, overrides: dict[str, Any]) -> TrainingConfig:
    """The checkpoint's own training config, with the explicitly given fields changed."""
    _, meta = checkpoints.read_meta(out_dir)
    return TrainingConfig.from_dict({**meta["training"], **overrides, "init_from": "resume"})


@dataclasses.dataclass
class TrainState:
    params: Any
    opt_state: Any
    step: int


class Trainer:
    """Trains `config.backend` (or the given backend) on prepared token files."""

    def __init__(self, config: TrainingConfig, backend: Backend | None = None) -> None:
        if config.dropout > 0:
            raise GPT2Error("dropout > 0 is not available yet; train with dropout 0.0.")
        if not config.data_dir:
            raise GPT2Error("Give data_dir, a folder made by `gpt2 prepare`.")
        self.config = config
        self.train_data = TokenDataset(config.data_dir, "train", config.block_size)
        self.val_data = TokenDataset(config.data_dir, "val", config.block_size)
        self.optimizer = make_optimizer(config)
        self.schedule = learning_rate_schedule(config)
        self.backend, self.model_config, self.state = self._initial_state(backend)
        self._train_step = self._build_train_step()
        self._eval_loss = jax.jit(
            functools.partial(language_model_loss, self.backend, config=self.model_config)
        )
        self._stop_signal: int | None = None

    # -- setup ---------------------------------------------------------------------------------

    def _initial_state(self, backend: Backend | None) -> tuple[Backend, GPT2Config, TrainState]:
        config, vocab = self.config, self.train_data.meta["vocab_size"]
        if config.init_from == "resume":
            step, meta = checkpoints.read_meta(config.out_dir)
            if meta["backend"] != config.backend:
                raise GPT2Error(
                    f"The checkpoint in {config.out_dir} was trained with the {meta['backend']} "
                    f"backend; resume it with --backend {meta['backend']}."
                )
            backend = backend or get_backend(meta["backend"])
            model_config = GPT2Config.from_hparams(meta["model"])
            template = self._fresh_state(backend.init(model_config, self._key(0)))
            state = checkpoints.restore_state(
                config.out_dir, step, {"params": template.params, "opt_state": template.opt_state}
            )
            return backend, model_config, TrainState(state["params"], state["opt_state"], step)
        backend = backend or get_backend(config.backend)
        if config.init_from == "scratch":
            model_config = config.model_config(vocab)
            params = backend.init(model_config, self._key(0))
        else:
            tree, model_config, _ = weights.load_pretrained(config.init_from)
            tree, model_config = self._fit_pretrained(tree, model_config, vocab)
            params = backend.from_canonical(tree, model_config)
        return backend, model_config, self._fresh_state(params)

    def _fit_pretrained(
        self, tree: dict, model_config: GPT2Config, vocab: int
    ) -> tuple[dict, GPT2Config]:
        """Check the data suits the pretrained model and crop its context to block_size."""
        if self.train_data.meta["tokenizer"] != "gpt2" or vocab > model_config.n_vocab:
            raise GPT2Error(
                f"Fine-tuning GPT-2 needs data prepared with the gpt2 tokenizer; {self.config.data_dir} "
                f"uses {self.train_data.meta['tokenizer']} with {vocab} tokens."
            )
        if self.config.block_size > model_config.n_ctx:
            raise GPT2Error(
                f"block_size {self.config.block_size} exceeds the model's context of {model_config.n_ctx}."
            )
        tree = {**tree, "wpe": tree["wpe"][: self.config.block_size]}
        return tree, dataclasses.replace(model_config, n_ctx=self.config.block_size)

    def _fresh_state(self, params: Any) -> TrainState:
        params = jax.tree.map(jnp.asarray, params)
        return TrainState(params, self.optimizer.init(params), 0)

    def _key(self, stream: int) -> jax.Array:
        """Independent PRNG streams of the run: 0 init, 1 train batches, 2 val batches."""
        return jax.random.fold_in(jax.random.PRNGKey(self.config.seed), stream)

    def _build_train_step(self):
        backend, model_config, optimizer = self.backend, self.model_config, self.optimizer
        compute_dtype = DTYPES[self.config.compute_dtype]

        def loss_fn(params: Any, batch: jax.Array) -> jax.Array:
            if compute_dtype != jnp.float32:  # fp32 master weights, bf16 arithmetic
                params = cast(params, compute_dtype)
            return language_model_loss(backend, params, batch, config=model_config)

        @functools.partial(jax.jit, donate_argnums=(0, 1))
        def train_step(params: Any, opt_state: Any, batches: jax.Array) -> tuple:
            """One optimizer step over `batches` [accumulation, batch, block + 1]."""

            def accumulate(totals: tuple, batch: jax.Array) -> tuple:
                loss, grads = jax.value_and_grad(loss_fn)(params, batch)
                return jax.tree.map(jnp.add, totals, (loss, grads)), None

            zeros = (jnp.zeros((), jnp.float32), jax.tree.map(jnp.zeros_like, params))
            (loss, grads), _ = jax.lax.scan(accumulate, zeros, batches)
            loss, grads = jax.tree.map(lambda x: x / batches.shape[0], (loss, grads))
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return (
                optax.apply_updates(params, updates),
                opt_state,
                loss,
                optax.tree_utils.tree_norm(grads),
            )

        return train_step

    # -- the loop ------------------------------------------------------------------------------

    def batches(self, step: int) -> np.ndarray:
        """The training batches of `step`: [accumulation, batch, block + 1]."""
        accumulation = self.config.gradient_accumulation_steps
        return np.stack([
            self.train_data.batch(self._key(1), step * accumulation + i, self.config.batch_size)
            for i in range(accumulation)
        ])  # fmt: skip

    def evaluate(self, step: int) -> float:
        losses = [
            self._eval_loss(
                self.state.params,
                self.val_data.batch(
                    jax.random.fold_in(self._key(2), step), i, self.config.batch_size
                ),
            )
            for i in range(self.config.eval_iters)
        ]
        return float(np.mean(jax.device_get(losses)))

    def run(self) -> dict[str, Any]:
        """Train until max_iters (or a stop signal); returns the last logged metrics."""
        config, state = self.config, self.state
        store = checkpoints.Checkpoints(config.out_dir, config.keep_last)
        log = MetricsLog(config, self.model_config.to_hparams())
        tokens_per_step = config.batch_size * config.gradient_accumulation_steps * config.block_size
        peak = PEAK_FLOPS.get(jax.devices()[0].device_kind)
        flops = flops_per_token(
            self.model_config.n_params,
            self.model_config.n_layer,
            self.model_config.n_embd,
            config.block_size,
        )
        best_val, last, last_saved = math.inf, {}, state.step
        handlers = self._catch_stop_signals()
        bar = tqdm(
            total=config.max_iters, initial=state.step, desc="train", file=sys.stderr,
            dynamic_ncols=True, disable=None,
        )  # fmt: skip
        timer, timed_steps = time.perf_counter(), 0
        try:
            while state.step < config.max_iters and self._stop_signal is None:
                state.params, state.opt_state, loss, grad_norm = self._train_step(
                    state.params, state.opt_state, jnp.asarray(self.batches(state.step))
                )
                state.step += 1
                timed_steps += 1
                bar.update(1)
                done = state.step == config.max_iters
                if (
                    state.step % config.log_interval
                    and state.step % config.eval_interval
                    and not done
                ):
                    continue
                loss = float(loss)
                self._check_finite("loss", math.isfinite(loss), state.step, last_saved)
                elapsed, timer = time.perf_counter() - timer, time.perf_counter()
                tokens_per_s = tokens_per_step * timed_steps / elapsed
                timed_steps = 0
                last = {
                    "train_loss": loss, "lr": float(self.schedule(state.step - 1)),
                    "grad_norm": float(grad_norm), "tok/s": tokens_per_s,
                    "mfu": flops * tokens_per_s / peak if peak else None,
                }  # fmt: skip
                if state.step % config.eval_interval == 0 or done:
                    last["val_loss"] = self.evaluate(state.step)
                    if last["val_loss"] < best_val and self._params_finite():
                        best_val = last["val_loss"]
                        store.save(
                            state.step,
                            self._state_dict(),
                            self._meta(state.step, best_val),
                            best=True,
                        )
                log.write(state.step, last)
                bar.write(console_line(state.step, last))
                if state.step % config.save_interval == 0 or done:
                    self._check_finite("parameters", self._params_finite(), state.step, last_saved)
                    store.save(state.step, self._state_dict(), self._meta(state.step, best_val))
                    last_saved = state.step
            if self._stop_signal is not None and state.step != last_saved:
                self._check_finite("parameters", self._params_finite(), state.step, last_saved)
                store.save(state.step, self._state_dict(), self._meta(state.step, best_val))
                bar.write(
                    f"stopped by signal at iter {state.step}; saved; resume with --init-from resume"
                )
        finally:
            bar.close()
            store.wait()
            store.close()
            log.close()
            for signum, handler in handlers.items():
                signal.signal(signum, handler)
        return {"iter": state.step, **last}

    def _state_dict(self) -> dict:
        return {"params": self.state.params, "opt_state": self.state.opt_state}

    def _meta(self, step: int, best_val: float) -> dict:
        return {
            "step": step,
            "backend": self.backend.name,
            "training": self.config.to_dict(),
            "model": self.model_config.to_hparams(),
            "data": self.train_data.meta,
            "best_val_loss": None if math.isinf(best_val) else best_val,
        }

    def _params_finite(self) -> bool:
        return bool(_all_finite(self.state.params))

    def _check_finite(self, what: str, finite: bool, step: int, last_saved: int) -> None:
        """Stop before a diverged state can be saved; the last good checkpoint stays."""
        if not finite:
            raise GPT2Error(
                f"Training diverged at iter {step}: the {what} became non-finite (nan or inf); "
                f"stopped without saving, and the last good checkpoint (iter {last_saved}) stays "
                f"in {self.config.out_dir}. Lower the learning rate or check the data."
            )

    def _catch_stop_signals(self) -> dict:
        def request_stop(signum: int, _frame: object) -> None:
            self._stop_signal = signum

        previous = {}
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, request_stop)
        return previous
