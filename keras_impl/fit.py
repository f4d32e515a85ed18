"""Training the Keras backend the Keras way: `model.fit` on the prepared token files.

`gpt2 train --backend keras --keras-fit` runs the same training as the shared trainer
(`shared.training.trainer`) through Keras' own machinery: a `keras.utils.PyDataset` serves the
shared trainer's batches, `keras.optimizers.AdamW` follows the shared schedule, `model.fit` trains,
and callbacks evaluate, log through the shared `MetricsLog` and write the shared orbax checkpoints
(so `gpt2 generate --checkpoint` and `gpt2 convert` read a Keras run unchanged). `--init-from
resume` restores the model and Keras' AdamW from those same checkpoints: one record of the run, so
no kill between two saves can leave two that disagree.

How a run maps onto Keras epochs. An epoch is E = gcd(log_interval, eval_interval, save_interval)
iterations, and `epochs` is max_iters / E (max_iters must be a multiple of E). With gradient
accumulation over A micro-batches, Keras' optimizer accumulates and a fit batch is one
micro-batch, so `steps_per_epoch` is E * A. Epoch e covers iterations [e*E, (e+1)*E), so every
interval ends on an epoch end: Keras validates at the epochs that end on a multiple of
eval_interval (`validation_freq`), and the callbacks log and checkpoint at epoch ends. A resumed
`fit` starts at the epoch of its checkpoint (`initial_epoch`), so this alignment is what makes
resuming exact, and a stop signal (SIGTERM, Ctrl-C) takes effect at the end of the current epoch
(at most E <= log_interval iterations later), saves and exits. No callback runs per batch, so
Keras keeps dispatching steps without waiting for each one.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import signal
import time
from typing import Any, cast

import jax
import jax.numpy as jnp
import keras
import numpy as np
import optax

from keras_impl import convert
from keras_impl.backend import backend
from keras_impl.model import GPT2LM
from shared import host_memory, lora, params
from shared.apply_options import ApplyOptions
from shared.config import GPT2Config
from shared.data import TokenDataset
from shared.dropout import Dropout
from shared.errors import GPT2Error
from shared.training import checkpoints
from shared.training.config import TrainingConfig
from shared.training.metrics import PEAK_FLOPS, MetricsLog, console_line, flops_per_token
from shared.training.optimizer import decay_mask, learning_rate_schedule, make_optimizer
from shared.training.trainer import (
    base_reference,
    check_same_data,
    diverged,
    pretrained_start,
    report_stop,
    stream_key,
)
from shared.weights import runs

logger = logging.getLogger(__name__)
"""Where the run's console lines go (`gpt2 train` shows INFO on stdout)."""

POLICIES = {"float32": "float32", "bfloat16": "mixed_bfloat16"}
"""compute_dtype -> Keras dtype policy (mixed: float32 weights, bfloat16 arithmetic)."""


class TrainBatches(keras.utils.PyDataset):
    """One epoch of training batches: batch i of epoch e is the shared trainer's micro-batch
    `e * len(self) + i`, as (inputs, targets), each [batch_size, block_size] int32.

    `epoch` is set by `RunControl` at each epoch's start. With one worker Keras draws batches
    lazily, inside the epoch, so a resumed run continues the very same stream. With
    `with_steps` the inputs are `{"tokens", "micro_step"}` (micro_step [batch_size], the batch's
    index in the run) for `DropoutLM` to key its masks with.
    """

    def __init__(
        self, data: TokenDataset, key: jax.Array, batch_size: int, length: int, with_steps: bool
    ) -> None:
        super().__init__()
        self.data, self.key, self.batch_size, self.length = data, key, batch_size, length
        self.with_steps = with_steps
        self.epoch = 0

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[Any, np.ndarray]:
        micro_step = self.epoch * self.length + index
        window = self.data.batch(self.key, micro_step, self.batch_size)
        if not self.with_steps:
            return window[:, :-1], window[:, 1:]
        steps = np.full(self.batch_size, micro_step, np.int32)
        return {"tokens": window[:, :-1], "micro_step": steps}, window[:, 1:]


class ValBatches(keras.utils.PyDataset):
    """The `eval_iters` validation batches of the evaluation at iteration `step`, drawn as the
    shared trainer draws them (key `fold_in(val stream, step)`); `step` is set by `RunControl`."""

    def __init__(self, data: TokenDataset, key: jax.Array, batch_size: int, length: int) -> None:
        super().__init__()
        self.data, self.key, self.batch_size, self.length = data, key, batch_size, length
        self.step = 0

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        key = jax.random.fold_in(self.key, self.step)
        window = self.data.batch(key, index, self.batch_size)
        return window[:, :-1], window[:, 1:]


@keras.saving.register_keras_serializable(package="gpt2")
class DropoutLM(GPT2LM):
    """`GPT2LM` whose training batches carry their micro-step, which keys GPT-2's dropout exactly
    as the shared trainer keys it: `Dropout(rate, fold_in(dropout stream, micro_step))`.

    Called on plain tokens (evaluation, generation) it is `GPT2LM`, without dropout.

    Args:
        config: the network's shape.
        rate: the dropout rate, in (0, 1).
        key: the run's dropout stream (`stream_key(seed, 3)`).
        **kwargs: passed to `GPT2LM` (`dtype`).
    """

    def __init__(self, config: GPT2Config, rate: float, key: jax.Array, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        self.rate, self.key = rate, jnp.asarray(key, jnp.uint32)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "rate": self.rate, "key": np.asarray(self.key).tolist()}

    def call(
        self,
        tokens: Any,
        positions: Any = None,
        cache: Any = None,
        options: ApplyOptions = ApplyOptions(),
    ) -> Any:
        if isinstance(tokens, dict):
            key = jax.random.fold_in(self.key, tokens["micro_step"][0])
            tokens = tokens["tokens"]
            options = dataclasses.replace(options, dropout=Dropout(self.rate, key))
        return super().call(tokens, positions, cache, options)


@keras.saving.register_keras_serializable(package="gpt2")
class SharedSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """`shared.training.optimizer.learning_rate_schedule` (linear warmup, cosine to min_lr) for a
    Keras optimizer, which counts micro-batches: iteration = optimizer step // accumulation.

    Args:
        training: a `TrainingConfig` as a dict (so the schedule serialises with `get_config`).
    """

    def __init__(self, training: dict[str, Any]) -> None:
        self.training = training
        config = TrainingConfig.from_dict(training)
        self.schedule = learning_rate_schedule(config)
        self.accumulation = config.gradient_accumulation_steps

    def __call__(self, step: Any) -> Any:
        return self.schedule(step // self.accumulation)

    def get_config(self) -> dict[str, Any]:
        return {"training": self.training}


def make_optimizer_for(model: keras.Model, config: TrainingConfig) -> keras.optimizers.AdamW:
    """Keras AdamW with the shared trainer's hyperparameters: the shared schedule, betas, weight
    decay (none on biases and LayerNorm, by the shared rule), global-norm clipping, accumulation.

    epsilon is optax's 1e-8, but Keras adds it to sqrt(v) before the bias correction and optax
    after it, so updates differ slightly where sqrt(v) is as small as epsilon. grad_clip 0 turns
    clipping off.
    """
    optimizer = keras.optimizers.AdamW(
        # Keras infers `learning_rate: float` from its default; it takes a LearningRateSchedule.
        learning_rate=SharedSchedule(config.to_dict()),  # pyright: ignore[reportArgumentType]
        weight_decay=config.weight_decay,
        beta_1=config.beta1,
        beta_2=config.beta2,
        epsilon=1e-8,
        global_clipnorm=config.grad_clip or None,
        gradient_accumulation_steps=config.gradient_accumulation_steps
        if config.gradient_accumulation_steps > 1
        else None,
    )
    variables = list(model.trainable_variables)
    optimizer.exclude_from_weight_decay(
        var_list=[v for v, decay in zip(variables, decay_mask(variables), strict=True) if not decay]
    )
    return optimizer


def epoch_iters(config: TrainingConfig) -> int:
    """Iterations per Keras epoch: every log, eval and save interval ends on an epoch end."""
    return math.gcd(config.log_interval, config.eval_interval, config.save_interval)


class RunControl(keras.callbacks.Callback):
    """Where the run is: tells the datasets which epoch and iteration they serve, turns a stop
    signal into a stop at the epoch's end, and says which epoch ends log, evaluate and save.

    It works per epoch only (no per-batch hook), so Keras keeps dispatching steps asynchronously.
    """

    def __init__(
        self, config: TrainingConfig, start_step: int, train: TrainBatches, val: ValBatches
    ) -> None:
        super().__init__()
        self.config, self.train, self.val = config, train, val
        self.epoch_iters = epoch_iters(config)
        self.step = start_step
        self.stop_signal: int | None = None

    @property
    def epochs(self) -> int:
        return self.config.max_iters // self.epoch_iters

    def evaluates(self, step: int) -> bool:
        return step % self.config.eval_interval == 0 or step == self.config.max_iters

    def validation_epochs(self) -> list[int]:
        """`validation_freq` for `fit`: the 1-based epochs that end on an evaluation."""
        return [e for e in range(1, self.epochs + 1) if self.evaluates(e * self.epoch_iters)]

    def logs_now(self) -> bool:
        return self.step % self.config.log_interval == 0 or self.evaluates(self.step)

    def saves_now(self) -> bool:
        done = self.step == self.config.max_iters or self.stop_signal is not None
        return self.step % self.config.save_interval == 0 or done

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.train.epoch = epoch
        self.step = epoch * self.epoch_iters

    def on_test_begin(self, logs: dict | None = None) -> None:
        self.val.step = self.step + self.epoch_iters  # validation runs at the epoch's end

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.step = (epoch + 1) * self.epoch_iters
        if self.stop_signal is not None:
            assert self.model is not None, "Keras sets a callback's model before calling it"
            self.model.stop_training = True

    def catch_stop_signals(self) -> dict:
        """Route SIGINT and SIGTERM to a stop at the next epoch end; returns the old handlers."""

        def request_stop(signum: int, _frame: object) -> None:
            self.stop_signal = signum

        return {s: signal.signal(s, request_stop) for s in (signal.SIGINT, signal.SIGTERM)}


class RunReport(keras.callbacks.Callback):
    """The shared trainer's outputs at epoch ends: the divergence check, metrics (JSONL,
    TensorBoard, W&B) and console lines, and orbax checkpoints (the last ones and the best by val).

    train_loss is Keras' epoch loss: the mean over the last epoch's iterations.
    """

    def __init__(self, run: KerasFit, control: RunControl) -> None:
        super().__init__()
        self.run, self.control = run, control
        config, model_config = run.config, run.model_config
        self.log = MetricsLog(config, model_config.to_hparams(), run.start_step)
        self.store = checkpoints.Checkpoints(config.out_dir, config.keep_last)
        self.schedule = learning_rate_schedule(config)
        self.tokens_per_iter = (
            config.batch_size * config.gradient_accumulation_steps * config.block_size
        )
        self.flops = flops_per_token(
            model_config.n_params, model_config.n_layer, model_config.n_embd, config.block_size
        )
        self.peak = PEAK_FLOPS.get(jax.devices()[0].device_kind)
        self.last: dict[str, Any] = {}
        self.last_saved = run.start_step
        self._timer, self._timed_from = time.perf_counter(), run.start_step

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs, step = logs or {}, self.control.step
        if not math.isfinite(logs.get("loss", math.nan)):
            self._diverged("loss", step)
        if self.control.logs_now():
            elapsed, self._timer = time.perf_counter() - self._timer, time.perf_counter()
            tokens_per_s = self.tokens_per_iter * (step - self._timed_from) / elapsed
            self._timed_from = step
            self.last = {
                "train_loss": float(logs["loss"]), "lr": float(np.asarray(self.schedule(step - 1))),
                "tok/s": tokens_per_s, "mfu": self.flops * tokens_per_s / self.peak if self.peak else None,
            }  # fmt: skip
            if "val_loss" in logs:
                self.last["val_loss"] = float(logs["val_loss"])
                if self.last["val_loss"] < self.run.best_val and self._finite():
                    self.run.best_val = self.last["val_loss"]
                    self.store.save(step, self.run.state(), self.run.meta(step), best=True)
            self.log.write(step, self.last)
            logger.info(console_line(step, self.last))
        if self.control.saves_now():
            if not self._finite():
                self._diverged("parameters", step)
            self.store.save(step, self.run.state(), self.run.meta(step))
            self.last_saved = step

    def close(self) -> None:
        self.store.wait()
        self.store.close()
        self.log.close()

    def _finite(self) -> bool:
        assert self.model is not None, "Keras sets a callback's model before calling it"
        return all(bool(np.isfinite(v.value).all()) for v in self.model.trainable_variables)

    def _diverged(self, what: str, step: int) -> None:
        """Stop before a diverged state is saved (raising skips every later save)."""
        raise diverged(what, step, self.last_saved, self.run.config.out_dir)


class KerasFit:
    """A `--keras-fit` run: a `GPT2LM` compiled with Keras AdamW, trained by `model.fit`.

    Args:
        config: the run (`TrainingConfig`); backend must be keras.

    Example:

    ```python
    from keras_impl.fit import KerasFit
    from shared.training.config import TrainingConfig

    config = TrainingConfig(data_dir="data/shakespeare_char", out_dir="out-kfit", backend="keras",
                            keras_fit=True, n_layer=4, n_head=4, n_embd=128, block_size=64)
    result = KerasFit(config).run()  # {"iter": 5000, "train_loss": ..., "val_loss": ...}
    ```
    """

    def __init__(self, config: TrainingConfig) -> None:
        if config.eval_only:
            raise GPT2Error(
                "eval_only evaluates with the shared trainer, for any backend: run "
                "`Trainer(config)` (as `gpt2 train --eval-only` does) instead of KerasFit."
            )
        if config.sharded:
            raise GPT2Error(
                "--keras-fit trains on one device; drop --mesh and the multi-process flags, or "
                "train without --keras-fit."
            )
        if config.max_iters % epoch_iters(config):
            raise GPT2Error(
                f"--keras-fit trains whole Keras epochs of {epoch_iters(config)} iterations (the gcd "
                "of log_interval, eval_interval and save_interval), so max_iters must be a multiple "
                f"of {epoch_iters(config)}; got {config.max_iters}."
            )
        if not config.data_dir:
            raise GPT2Error("Give data_dir, a folder made by `gpt2 prepare`.")
        self.config = config
        self.stop_signal: int | None = None
        """SIGINT or SIGTERM when one stopped the run before max_iters, else None."""
        self.train_data = TokenDataset(config.data_dir, "train", config.block_size)
        self.val_data = TokenDataset(config.data_dir, "val", config.block_size)
        if config.init_from == "resume":
            self.start_step, meta = checkpoints.resume_point(config.out_dir)
            if meta["backend"] != "keras":
                raise GPT2Error(
                    f"The checkpoint in {config.out_dir} was trained with the {meta['backend']} "
                    "backend, and --keras-fit continues Keras runs only; resume it without "
                    "--keras-fit."
                )
            check_same_data(meta["data"], self.train_data.meta, config.data_dir)
            if self.start_step % epoch_iters(config):
                raise GPT2Error(
                    f"The checkpoint in {config.out_dir} is at iter {self.start_step}, not at the "
                    f"end of a Keras epoch of {epoch_iters(config)} iterations (the gcd of "
                    "log_interval, eval_interval and save_interval); choose intervals whose gcd "
                    f"divides {self.start_step}."
                )
            self.model_config = GPT2Config.from_hparams(meta["model"])
            self.best_val = checkpoints.best_val_loss(config.out_dir, meta)
            self.model = self._model()
            self.lora_meta = meta.get("lora")
            if self.lora_meta is not None:
                convert.load_into(self.model, runs.lora_base(config.out_dir, meta))
                self._enable_lora()
            self._compile()
            self._restore()
        else:
            checkpoints.check_new_run(config.out_dir)
            tree, self.model_config = self._initial_tree()
            self.start_step, self.best_val = 0, math.inf
            self.model = self._model()
            convert.load_into(self.model, tree)
            self.lora_meta = None
            if config.lora is not None:
                lora.check(config.lora, self.model_config)
                self.lora_meta = {**config.lora.to_dict(), "base": base_reference(config, tree)}
                self._enable_lora()
            self._compile()

    def _compile(self) -> None:
        self.model.compile(
            optimizer=make_optimizer_for(self.model, self.config),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )

    def _restore(self) -> None:
        """Put the checkpoint's parameters and AdamW moments into the model and its optimizer,
        whose step count is the micro-batches an uninterrupted run would have taken by now."""
        model, optimizer = self.model, self.model.optimizer
        optimizer.build(model.trainable_variables)  # its moments exist, for `state` to describe
        saved = checkpoints.restore_state(self.config.out_dir, self.start_step, self.state())
        for variables, values in (
            (model.trainable_variables, saved["params"]),
            (optimizer._momentums, optax.tree_utils.tree_get(saved["opt_state"], "mu")),
            (optimizer._velocities, optax.tree_utils.tree_get(saved["opt_state"], "nu")),
        ):
            for variable, path in zip(variables, self._variable_paths(), strict=True):
                variable.assign(values[path])
        optimizer._iterations.assign(self.start_step * self.config.gradient_accumulation_steps)

    def _enable_lora(self) -> None:
        """Keras' own LoRA on the targeted `Dense` layers (`GPT2LM.enable_lora`), starting from
        the shared trainer's adapters; every other weight is frozen, so `fit` trains (and AdamW
        keeps moments for) the adapters alone."""
        lora_config = self.config.lora
        assert lora_config is not None, "a LoRA run has a LoRA config"
        self.model.enable_lora(lora_config.rank, lora_config.alpha, lora_config.targets)
        adapters = runs.fresh_adapters(
            backend, self.model_config, lora_config, stream_key(self.config.seed, 0)
        )
        for variable in self.model.weights:
            path = convert.variable_path(self.model, variable)
            if path in adapters:
                variable.assign(adapters[path])
            else:
                variable.trainable = False

    def _model(self) -> GPT2LM:
        config, policy = self.config, POLICIES[self.config.compute_dtype]
        if config.dropout > 0:
            key = stream_key(config.seed, 3)
            return DropoutLM(
                self.model_config, config.dropout, key, remat=config.remat, dtype=policy
            )
        return GPT2LM(self.model_config, remat=config.remat, dtype=policy)

    def _initial_tree(self) -> tuple[dict, GPT2Config]:
        """The canonical weights to start from, as the shared trainer starts: its initialisation
        for scratch, or the weights init_from names, checked against the data and cropped to
        block_size (`pretrained_start`)."""
        config, vocab = self.config, self.train_data.meta["vocab_size"]
        if config.init_from == "scratch":
            model_config = config.model_config(vocab)
            return params.init_params(model_config, stream_key(config.seed, 0)), model_config
        return pretrained_start(config, self.train_data.meta)

    def run(self) -> dict[str, Any]:
        """`model.fit` until max_iters (or a stop signal); returns the last logged metrics."""
        config = self.config
        host_memory.reuse_freed_memory()
        train = TrainBatches(
            self.train_data,
            stream_key(config.seed, 1),
            config.batch_size,
            epoch_iters(config) * config.gradient_accumulation_steps,
            with_steps=config.dropout > 0,
        )
        val = ValBatches(
            self.val_data, stream_key(config.seed, 2), config.batch_size, config.eval_iters
        )
        control = RunControl(config, self.start_step, train, val)
        report = RunReport(self, control)
        handlers = control.catch_stop_signals()
        try:
            self.model.fit(
                train,
                validation_data=val,
                epochs=control.epochs,
                steps_per_epoch=len(train),
                validation_steps=len(val),
                # Keras infers `validation_freq: int` and `verbose: str` from their defaults; it
                # takes a list of epochs and 0 (silent) as documented.
                validation_freq=control.validation_epochs(),  # pyright: ignore[reportArgumentType]
                initial_epoch=self.start_step // epoch_iters(config),
                callbacks=[control, report],
                shuffle=False,
                verbose=0,  # pyright: ignore[reportArgumentType]
            )
        finally:
            report.close()
            for signum, handler in handlers.items():
                signal.signal(signum, handler)
        if control.step < config.max_iters and control.stop_signal is not None:
            self.stop_signal = control.stop_signal
            report_stop(self.stop_signal, control.step)
        return {"iter": control.step, **report.last}

    def state(self) -> dict[str, Any]:
        """The run as the shared trainer checkpoints it: the backend's parameters and an optax
        AdamW state holding Keras' moments and step count, so every shared reader of checkpoints
        (`load_for_inference`, the shared trainer's resume) accepts it."""
        model, optimizer = self.model, self.model.optimizer
        paths = self._variable_paths()

        def by_path(variables: list[keras.Variable]) -> dict[str, np.ndarray]:
            """Host copies: fit donates the device buffers to its next step."""
            return {p: np.asarray(v.value) for p, v in zip(paths, variables, strict=True)}

        current = by_path(model.trainable_variables)
        opt_state = optax.tree_utils.tree_set(
            make_optimizer(self.config).init(current),
            mu=by_path(optimizer._momentums),  # Adam's slots, in trainable_variables order
            nu=by_path(optimizer._velocities),
            # Keras is untyped; convert_to_numpy returns an np.ndarray
            count=cast(np.ndarray, keras.ops.convert_to_numpy(optimizer.iterations)).astype(
                np.int32
            ),
        )
        return {"params": current, "opt_state": opt_state}

    def _variable_paths(self) -> list[str]:
        """Each trainable variable's path, in order; Adam's slots follow the same order."""
        return [convert.variable_path(self.model, v) for v in self.model.trainable_variables]

    def meta(self, step: int) -> dict[str, Any]:
        return {
            "step": step,
            "backend": "keras",
            "training": self.config.to_dict(),
            "model": self.model_config.to_hparams(),
            "data": self.train_data.meta,
            "best_val_loss": None if math.isinf(self.best_val) else self.best_val,
            **({} if self.lora_meta is None else {"lora": self.lora_meta}),
        }
