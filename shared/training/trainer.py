"""The training loop, written once over the backend contract, so every backend trains the same way.

Each iteration draws its batches from (seed, step), runs one jitted step with donated buffers, and
every interval logs, evaluates on val, and checkpoints. SIGTERM or Ctrl-C saves and stops the run
(`stop_signal` says which); a non-finite loss stops the run before anything bad is saved. Resume
continues bit-for-bit.

On several devices (`mesh`, or more than one device) the state and batches are global arrays split
by `shared.distributed`'s rules, and the same step runs partitioned by `jit`; on one device without
a mesh nothing is sharded.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import signal
import sys
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from shared import host_memory, weights
from shared import lora as lora_lib
from shared.backend import Backend, get_backend
from shared.config import GPT2Config, config_for_size
from shared.data import TokenDataset
from shared.distributed import mesh as mesh_lib
from shared.distributed import partition, placement, runtime
from shared.errors import GPT2Error
from shared.jax_types import Device, PyTree
from shared.lora_backend import lora_backend, with_base
from shared.loss import language_model_loss
from shared.tokenizer import EOT_ID
from shared.training import checkpoints
from shared.training.config import RUNTIME_FIELDS, TrainingConfig
from shared.training.metrics import PEAK_FLOPS, MetricsLog, console_line, flops_per_token
from shared.training.optimizer import learning_rate_schedule, make_optimizer
from shared.training.step import make_train_step
from shared.weights import runs


@jax.jit
def _all_finite(tree: Any) -> jax.Array:
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def stream_key(seed: int, stream: int) -> jax.Array:
    """The run's independent PRNG streams: 0 init, 1 train batches, 2 val batches, 3 dropout.

    Every trainer (the shared one and Keras `fit`) draws from these, so they agree step for step.
    """
    return jax.random.fold_in(jax.random.PRNGKey(seed), stream)


def pretrained_start(config: TrainingConfig, data_meta: dict) -> tuple[dict, GPT2Config]:
    """The weights `config.init_from` names (a GPT-2 size, downloaded if need be, or any source
    `gpt2 convert` reads), checked against the data and cropped to block_size."""
    start = weights.resolve(config.init_from)
    tree, model_config = start.tree, start.config
    if start.kind == "run":  # a run's ids are its own data's: the new data must read the same
        assert start.meta is not None, "a run's weights come with its checkpoint's metadata"
        check_same_data(
            start.meta["data"], data_meta, config.data_dir, f"the run in {config.init_from}"
        )
    elif data_meta["tokenizer"] != "gpt2" or data_meta["vocab_size"] != model_config.n_vocab:
        raise GPT2Error(
            f"Fine-tuning needs data prepared with the gpt2 tokenizer and weights with its "
            f"{EOT_ID + 1} token ids; {config.init_from} has {model_config.n_vocab} and "
            f"{config.data_dir} uses the {data_meta['tokenizer']} tokenizer with "
            f"{data_meta['vocab_size']} tokens (a character-level model fine-tunes from its "
            "training run's out_dir)."
        )
    if config.block_size > model_config.n_ctx:
        raise GPT2Error(
            f"block_size {config.block_size} exceeds the model's context of {model_config.n_ctx}."
        )
    tree = {**tree, "wpe": tree["wpe"][: config.block_size]}
    return tree, dataclasses.replace(model_config, n_ctx=config.block_size)


def base_reference(config: TrainingConfig, tree: dict) -> dict[str, str]:
    """What a LoRA run's checkpoints say of the base weights they adapt: where to read them
    again (a size name, or an absolute path) and the sha256 that tells them from others."""
    source = config.init_from
    if Path(source).exists():
        source = str(Path(source).resolve())
    return {"source": source, "sha256": lora_lib.base_digest(tree)}


logger = logging.getLogger(__name__)
"""Where the run's console lines go (`gpt2 train` shows INFO on stdout, above the progress bar)."""

SHAPE_FIELDS = {"n_layer": "n_layer", "n_head": "n_head", "n_embd": "n_embd", "block_size": "n_ctx"}
"""The training fields that fix the model's shape -> its hparams' names."""


def resume_config(out_dir: str, overrides: dict[str, Any]) -> TrainingConfig:
    """The training config of the checkpoint in `out_dir` (which it continues, wherever it was
    first trained), with the explicitly given fields changed.

    The model's shape cannot change. The learning rate keeps the run's decay length unless
    lr_decay_iters is given, so a larger max_iters extends the run at min_lr instead of warming
    the schedule back up. Where the run executes (mesh, processes) comes from `overrides` only.
    """
    _, meta = checkpoints.read_meta(out_dir)
    keep_shape = "a resumed run keeps its model's shape, so drop the flag or start a new run in "
    for name, hparam in SHAPE_FIELDS.items():
        if overrides.get(name, meta["model"][hparam]) != meta["model"][hparam]:
            raise GPT2Error(
                f"--{name.replace('_', '-')} {overrides[name]} differs from the checkpoint in "
                f"{out_dir}, whose {name} is {meta['model'][hparam]}; {keep_shape}another --out-dir."
            )
    if "model_size" in overrides:
        size = config_for_size(overrides["model_size"])
        shape = {name: overrides.get(name) or getattr(size, name) for name in _WIDTHS}
        if any(shape[name] != meta["model"][name] for name in _WIDTHS):
            raise GPT2Error(
                f"--model-size {overrides['model_size']} gives {_describe(shape)}, but the "
                f"checkpoint in {out_dir} has {_describe(meta['model'])}; {keep_shape}another "
                "--out-dir."
            )
    defaults = TrainingConfig.__dataclass_fields__
    for name in LORA_FIELDS:
        saved = meta["training"].get(name, defaults[name].default)
        if overrides.get(name, saved) != saved:
            raise GPT2Error(
                f"--{name.replace('_', '-')} {overrides[name]} differs from the checkpoint in "
                f"{out_dir}, whose {name} is {saved}; a resumed run keeps its adapters, so drop "
                "the flag or start a new run in another --out-dir."
            )
    resumed = {**_saved_settings(meta), **overrides, "out_dir": str(out_dir), "init_from": "resume"}
    return TrainingConfig.from_dict(resumed)


_WIDTHS = ("n_layer", "n_head", "n_embd")
LORA_FIELDS = ("lora_rank", "lora_alpha", "lora_targets")
"""A resumed run's adapters are its checkpoint's: these cannot change."""
_NOT_SETTINGS = (*RUNTIME_FIELDS, "out_dir", "init_from", "eval_only")
"""Fields that say where or how a run is continued, not how it trains."""


def _describe(shape: dict[str, int]) -> str:
    return f"{shape['n_layer']} layers, {shape['n_head']} heads, {shape['n_embd']} wide"


def _saved_settings(meta: dict) -> dict[str, Any]:
    """The training fields a checkpoint's run used, its decay length made explicit."""
    saved = {k: v for k, v in meta["training"].items() if k not in RUNTIME_FIELDS}
    if saved.get("lr_decay_iters") is None:
        saved["lr_decay_iters"] = saved["max_iters"]
    return saved


def changed_settings(config: TrainingConfig) -> list[str]:
    """How a resume's `config` differs from the run its checkpoint continues ("seed 1337 -> 7"):
    any change but a longer max_iters or other logging makes it differ from an uninterrupted run."""
    _, meta = checkpoints.read_meta(config.out_dir)
    saved, now = _saved_settings(meta), config.to_dict()
    return [
        f"{name} {saved[name]!r} -> {now[name]!r}"
        for name in now
        if name in saved and name not in _NOT_SETTINGS and saved[name] != now[name]
    ]


def check_same_data(
    checkpoint_data: dict, data_meta: dict, data_dir: str, checkpoint: str = "the checkpoint"
) -> None:
    """Refuse to train `checkpoint` (resumed, or the start of a fine-tuning) on token files whose
    ids mean something else than the ids of the data it was trained on."""
    for name in ("tokenizer", "vocab_size"):
        if data_meta[name] != checkpoint_data[name]:
            raise GPT2Error(
                f"The data in {data_dir} has {name} {data_meta[name]!r}, but the data of {checkpoint} "
                f"has {checkpoint_data[name]!r}; train it on data prepared the same way."
            )
    new, old = data_meta.get("alphabet"), checkpoint_data.get("alphabet")
    if new != old:
        # the tokenizers match (checked above), so both hold an alphabet
        assert new is not None and old is not None, "a char tokenizer's data has its alphabet"
        added, missing = "".join(sorted(set(new) - set(old))), "".join(sorted(set(old) - set(new)))
        raise GPT2Error(
            f"The data in {data_dir} has another alphabet than the data of {checkpoint} ({added!r} "
            f"added, {missing!r} missing); train it on data prepared from the same characters."
        )


def report_stop(signum: int, step: int) -> None:
    """Say that a stop signal ended the run at `step`, saved (`stop_signal` gives the status)."""
    logger.info(
        "stopped by %s at iter %d; saved; resume with --init-from resume",
        signal.Signals(signum).name,
        step,
    )


def diverged(what: str, step: int, last_saved: int, out_dir: str) -> GPT2Error:
    """The error that stops a run before a non-finite state is saved (`last_saved` 0: none yet)."""
    kept = (
        f"the last good checkpoint (iter {last_saved}) stays in {out_dir}"
        if last_saved
        else f"no checkpoint was written to {out_dir}"
    )
    return GPT2Error(
        f"Training diverged at iter {step}: the {what} became non-finite (nan or inf); stopped "
        f"without saving, and {kept}. Lower the learning rate or check the data."
    )


@dataclasses.dataclass
class TrainState:
    params: PyTree
    opt_state: Any
    step: int
    best_val: float = math.inf  # the lowest val loss so far, which `best/` holds


class Trainer:
    """Trains `config.backend` (or the given backend) on prepared token files.

    `devices` (default: every device of every process) are the ones `config.mesh` spans.
    """

    def __init__(
        self,
        config: TrainingConfig,
        backend: Backend | None = None,
        *,
        devices: list[Device] | None = None,
    ) -> None:
        if not config.data_dir:
            raise GPT2Error("Give data_dir, a folder made by `gpt2 prepare`.")
        runtime.initialize(config.coordinator, config.num_processes, config.process_id)
        if config.init_from != "resume" and not config.eval_only:
            checkpoints.check_new_run(config.out_dir)
        self.config = config
        self.train_data = TokenDataset(config.data_dir, "train", config.block_size)
        self.val_data = TokenDataset(config.data_dir, "val", config.block_size)
        self.optimizer = make_optimizer(config)
        self.schedule = learning_rate_schedule(config)
        self.mesh = self._make_mesh(devices)
        if config.lora is not None and self.mesh is not None:
            raise GPT2Error(
                f"LoRA trains on one device, and this run spans {self.mesh.size}; run it on one "
                "device or without lora_rank."
            )
        self._shardings: dict | None = None
        self.frozen: PyTree = None
        """With LoRA the base weights (the backend's), which the step reads and never updates."""
        self.lora_meta: dict | None = None
        self.backend, self.model_config, self.state = self._initial_state(backend)
        self._train_step = self._build_train_step()
        self._eval_loss = jax.jit(
            functools.partial(language_model_loss, self.model_backend, config=self.model_config)
        )
        if self.mesh is not None:
            self._shard_steps()
        self.stop_signal: int | None = None
        """SIGINT or SIGTERM when one stopped the run before max_iters, else None."""

    # -- setup ---------------------------------------------------------------------------------

    def _initial_state(self, backend: Backend | None) -> tuple[Backend, GPT2Config, TrainState]:
        config, vocab = self.config, self.train_data.meta["vocab_size"]
        if config.init_from == "resume":
            read = checkpoints.read_meta if config.eval_only else checkpoints.resume_point
            step, meta = read(config.out_dir)
            if meta["backend"] != config.backend:
                raise GPT2Error(
                    f"The checkpoint in {config.out_dir} was trained with the {meta['backend']} "
                    f"backend; resume it with --backend {meta['backend']}."
                )
            check_same_data(meta["data"], self.train_data.meta, config.data_dir)
            backend = backend or get_backend(meta["backend"])
            model_config = GPT2Config.from_hparams(meta["model"])
            if (config.lora is None) != ("lora" not in meta):
                raise GPT2Error(
                    f"The checkpoint in {config.out_dir} was trained "
                    f"{'with' if 'lora' in meta else 'without'} LoRA; resume it with its own "
                    "lora_rank, lora_alpha and lora_targets (`gpt2 train --init-from resume` "
                    "takes them from the checkpoint)."
                )
            if config.lora is not None:
                self.lora_meta = meta["lora"]
                self.frozen = backend.from_canonical(
                    runs.lora_base(config.out_dir, meta), model_config
                )
            if config.eval_only:
                target = self._params_target(backend, model_config)
                params = runs.restore_params(config.out_dir, step, target)
                return backend, model_config, TrainState(params, None, step)
            target = self._restore_target(backend, model_config)
            saved = checkpoints.restore_state(config.out_dir, step, target)
            best_val = checkpoints.best_val_loss(config.out_dir, meta)
            state = TrainState(saved["params"], saved["opt_state"], step, best_val)
            return backend, model_config, state
        backend = backend or get_backend(config.backend)
        if config.init_from == "scratch":
            model_config = config.model_config(vocab)
            params = backend.init(model_config, self._key(0))
        else:
            tree, model_config = pretrained_start(config, self.train_data.meta)
            params = backend.from_canonical(tree, model_config)
            if config.lora is not None:
                lora_lib.check(config.lora, model_config)
                self.lora_meta = {**config.lora.to_dict(), "base": base_reference(config, tree)}
                self.frozen = params
                params = self._init_trainable(backend, model_config)
        state = self._fresh_state(params, backend, model_config, optimizer=not config.eval_only)
        return backend, model_config, state

    def _fresh_state(
        self, params: PyTree, backend: Backend, model_config: GPT2Config, *, optimizer: bool = True
    ) -> TrainState:
        """Step 0 of `params`, with AdamW's state unless `optimizer` is False: `eval_only` skips
        the moments, which take twice the parameters' memory."""
        params = jax.tree.map(jnp.asarray, params)
        if self.mesh is None:
            return TrainState(params, self.optimizer.init(params) if optimizer else None, 0)
        shardings = self._state_shardings(backend, model_config)
        params = placement.put(params, shardings["params"])
        init = jax.jit(self.optimizer.init, out_shardings=shardings["opt_state"])
        return TrainState(params, init(params) if optimizer else None, 0)

    def _restore_target(self, backend: Backend, model_config: GPT2Config) -> dict:
        """What a checkpoint restores into: shape structs carrying where each array goes (this
        run's shardings on a mesh, else its one device), so nothing is computed before the
        restore, and a checkpoint saved on any mesh (or one device) restores onto this one."""
        shapes = self._state_shapes(backend, model_config)
        if self.mesh is None:
            device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
            return placement.abstract(shapes, jax.tree.map(lambda _: device, shapes))
        return placement.abstract(shapes, self._state_shardings(backend, model_config))

    def _params_target(self, backend: Backend, model_config: GPT2Config) -> Any:
        """Shape structs of the parameters alone (`eval_only` restores nothing else), carrying
        this run's shardings on a mesh; nothing is allocated before the restore."""
        if self.mesh is None:
            return jax.eval_shape(functools.partial(self._init_trainable, backend, model_config))
        return self._restore_target(backend, model_config)["params"]

    def _init_trainable(self, backend: Backend, model_config: GPT2Config) -> PyTree:
        """What the run trains, freshly initialised: every weight, or with LoRA the adapters."""
        if self.config.lora is None:
            return backend.init(model_config, self._key(0))
        return runs.fresh_adapters(backend, model_config, self.config.lora, self._key(0))

    @property
    def model_backend(self) -> Backend:
        """The backend the loss runs: with LoRA the one whose parameters are base + adapters."""
        lora = self.config.lora
        return self.backend if lora is None else lora_backend(self.backend, lora)

    def model_params(self) -> PyTree:
        """The parameters of `model_backend`: the trained ones, with LoRA beside the base."""
        params = self.state.params
        return params if self.frozen is None else with_base(self.frozen, params)

    # -- devices -------------------------------------------------------------------------------

    def _make_mesh(self, devices: list[Device] | None) -> jax.sharding.Mesh | None:
        """The run's mesh; None (plain jit, nothing sharded) on one device without --mesh."""
        if self.config.mesh is None and devices is None and jax.device_count() == 1:
            return None
        mesh = mesh_lib.make_mesh(self.config.mesh, devices)
        mesh_lib.check_batch_size(self.config.batch_size, mesh_lib.MeshSpec(**dict(mesh.shape)))
        return mesh

    def _state_shapes(self, backend: Backend, model_config: GPT2Config) -> dict:
        def init() -> dict:
            params = self._init_trainable(backend, model_config)
            return {"params": params, "opt_state": self.optimizer.init(params)}

        return jax.eval_shape(init)

    def _state_shardings(
        self, backend: Backend | None = None, model_config: GPT2Config | None = None
    ) -> dict:
        """NamedShardings of params and optimizer state under the partition rules (computed once)."""
        assert self.mesh is not None, "shardings exist only on a mesh"
        if self._shardings is None:
            backend, model_config = backend or self.backend, model_config or self.model_config
            shapes = self._state_shapes(backend, model_config)
            self._shardings = placement.state_shardings(self.mesh, backend, model_config, shapes)
        return self._shardings

    def _shard_steps(self) -> None:
        """The step keeps the state's shardings (so donation updates it in place); evaluation
        gathers the parameters like the step does."""
        assert self.mesh is not None, "only a run on a mesh shards its steps"
        shardings, replicated = self._state_shardings(), placement.replicated(self.mesh)
        self._train_step = jax.jit(
            self._train_step,
            donate_argnums=(0, 1),
            out_shardings=(shardings["params"], shardings["opt_state"], replicated, replicated),
        )
        loss = functools.partial(language_model_loss, self.backend, config=self.model_config)
        self._eval_loss = jax.jit(lambda params, batch: loss(self._gather(params), batch))

    def _gather(self, params: PyTree) -> PyTree:
        """Inside the step: the full parameters for the forward and backward pass (FSDP gathers
        them from their shards; their gradients are reduce-scattered back). Nothing on one device."""
        return params if self.mesh is None else placement.gathered(self.mesh, params)

    def _global_batch(self, rows_of: Any, shape: tuple[int, ...], axes: tuple[str, ...]) -> Any:
        """`rows_of(slice(None))` as is on one device; on a mesh a global array split by the
        batch rule, each process reading only its own rows."""
        if self.mesh is None:
            return jnp.asarray(rows_of(slice(None)))
        sharding = placement.batch_sharding(self.mesh, shape, axes)
        return placement.global_batch(rows_of, shape, sharding, row_axis=axes.index("batch"))

    def _key(self, stream: int) -> jax.Array:
        return stream_key(self.config.seed, stream)

    def _build_train_step(self) -> Any:
        return make_train_step(
            self.model_backend,
            self.model_config,
            self.optimizer,
            self.config.compute_dtype,
            dropout_rate=self.config.dropout,
            dropout_stream=self._key(3),
            gather=self._gather,
            remat=self.config.remat,
        )

    # -- the loop ------------------------------------------------------------------------------

    def batches(self, step: int, rows: slice = slice(None)) -> np.ndarray:
        """The training batches of `step`: [accumulation, batch, block + 1] (only `rows`)."""
        accumulation = self.config.gradient_accumulation_steps
        return np.stack([
            self.train_data.batch(self._key(1), step * accumulation + i, self.config.batch_size, rows)
            for i in range(accumulation)
        ])  # fmt: skip

    def device_batches(self, step: int) -> jax.Array:
        """`batches(step)` on the devices (split by the batch rule on a mesh)."""
        config = self.config
        shape = (config.gradient_accumulation_steps, config.batch_size, config.block_size + 1)
        return self._global_batch(
            functools.partial(self.batches, step), shape, partition.TRAIN_BATCH
        )

    def step(self) -> tuple[jax.Array, jax.Array]:
        """One iteration of the loop: the state moves on by one step. Returns its (loss,
        grad_norm), still on the device, so the loop dispatches the next step without waiting."""
        state = self.state
        state.params, state.opt_state, loss, grad_norm = self._train_step(
            state.params, state.opt_state, self.device_batches(state.step), state.step, self.frozen
        )
        state.step += 1
        return loss, grad_norm

    def evaluate(self, step: int, split: str = "val") -> float:
        """Mean loss over `eval_iters` batches of `split`, drawn by (seed, step), so evaluating a
        checkpoint (`eval_only`) gives the val loss its run logged at that step."""
        data = {"train": self.train_data, "val": self.val_data}[split]
        key, size = jax.random.fold_in(self._key(2), step), self.config.batch_size
        losses = [
            self._eval_loss(
                self.model_params(),
                self._global_batch(
                    functools.partial(data.batch, key, i, size),
                    (size, self.config.block_size + 1),
                    partition.EVAL_BATCH,
                ),
            )
            for i in range(self.config.eval_iters)
        ]
        return float(np.mean(jax.device_get(losses)))

    def evaluate_only(self) -> dict[str, Any]:
        """The starting model's train and val losses (`eval_only`); nothing is trained or saved."""
        step = self.state.step
        return {
            "iter": step,
            "train_loss": self.evaluate(step, "train"),
            "val_loss": self.evaluate(step, "val"),
        }

    def run(self) -> dict[str, Any]:
        """Train until max_iters (or a stop signal); returns the last logged metrics."""
        if self.config.eval_only:
            return self.evaluate_only()
        config, state = self.config, self.state
        host_memory.reuse_freed_memory()
        log = MetricsLog(
            config, self.model_config.to_hparams(), state.step, enabled=runtime.is_primary()
        )
        store = checkpoints.Checkpoints(config.out_dir, config.keep_last)
        tokens_per_step = config.batch_size * config.gradient_accumulation_steps * config.block_size
        peak = PEAK_FLOPS.get(jax.devices()[0].device_kind)
        if peak and self.mesh is not None:
            peak *= self.mesh.size  # MFU of the whole mesh
        flops = flops_per_token(
            self.model_config.n_params,
            self.model_config.n_layer,
            self.model_config.n_embd,
            config.block_size,
        )
        best_val, last, last_saved = state.best_val, {}, state.step
        handlers = self._catch_stop_signals()
        bar = tqdm(
            total=config.max_iters, initial=state.step, desc="train", file=sys.stderr,
            dynamic_ncols=True, disable=None if runtime.is_primary() else True,
        )  # fmt: skip
        timer, timed_steps = time.perf_counter(), 0
        try:
            while state.step < config.max_iters and self.stop_signal is None:
                loss, grad_norm = self.step()
                timed_steps += 1
                bar.update(1)
                done = state.step == config.max_iters
                evals = state.step % config.eval_interval == 0 or done
                logs = evals or state.step % config.log_interval == 0
                saves = state.step % config.save_interval == 0 or done
                if not (logs or saves):
                    continue  # no host sync: the next step is dispatched at once
                loss = float(loss)
                self._check_finite("loss", math.isfinite(loss), state.step, last_saved)
                if logs:
                    elapsed, timer = time.perf_counter() - timer, time.perf_counter()
                    tokens_per_s = tokens_per_step * timed_steps / elapsed
                    timed_steps = 0
                    last = {
                        "train_loss": loss, "lr": float(np.asarray(self.schedule(state.step - 1))),
                        "grad_norm": float(grad_norm), "tok/s": tokens_per_s,
                        "mfu": flops * tokens_per_s / peak if peak else None,
                    }  # fmt: skip
                if evals:
                    last["val_loss"] = self.evaluate(state.step)
                    if last["val_loss"] < best_val and self._params_finite():
                        best_val = last["val_loss"]
                        store.save(
                            state.step,
                            self._state_dict(),
                            self._meta(state.step, best_val),
                            best=True,
                        )
                if logs:
                    log.write(state.step, last)
                    if runtime.is_primary():
                        logger.info(console_line(state.step, last))
                if saves:
                    self._check_finite("parameters", self._params_finite(), state.step, last_saved)
                    store.save(state.step, self._state_dict(), self._meta(state.step, best_val))
                    last_saved = state.step
            if state.step == config.max_iters:
                self.stop_signal = None  # a signal during the last save: the run is complete
            elif self.stop_signal is not None:
                if state.step != last_saved:
                    self._check_finite("parameters", self._params_finite(), state.step, last_saved)
                    store.save(state.step, self._state_dict(), self._meta(state.step, best_val))
                report_stop(self.stop_signal, state.step)
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
            **({} if self.lora_meta is None else {"lora": self.lora_meta}),
        }

    def _params_finite(self) -> bool:
        return bool(_all_finite(self.state.params))

    def _check_finite(self, what: str, finite: bool, step: int, last_saved: int) -> None:
        """Stop before a diverged state can be saved; the last good checkpoint stays."""
        if not finite:
            raise diverged(what, step, last_saved, self.config.out_dir)

    def _catch_stop_signals(self) -> dict:
        def request_stop(signum: int, _frame: object) -> None:
            self.stop_signal = signum

        previous = {}
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, request_stop)
        return previous
