"""TrainingConfig: every knob of a training run, typed and validated, from code, a TOML/JSON file or
the command line (each field is a flag, spelled `--kebab-case` and `--snake_case`)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, cast

from shared import text_input
from shared.config import MODEL_SIZES, SIZE_ALIASES, GPT2Config, config_for_size, resolve_model_size
from shared.errors import GPT2Error
from shared.lora import DEFAULT_TARGETS, TARGETS, LoraConfig, parse_targets

INIT_FROM = ("scratch", "resume", *MODEL_SIZES, *SIZE_ALIASES)
FILE_FORMATS = {".toml": tomllib.loads, ".json": json.loads}
"""Config file suffix (any case) -> parser."""
RUNTIME_FIELDS = ("mesh", "coordinator", "num_processes", "process_id")
"""Where a run executes, not what it trains: a resumed run takes them from its own flags only, so
a checkpoint resumes on another mesh, another host count or one device."""


def _flag(default: Any, help: str) -> Any:
    """A field with its command-line help beside it (`add_arguments` reads it)."""
    return dataclasses.field(default=default, metadata={"help": help})


@dataclasses.dataclass(frozen=True)
class TrainingConfig:
    """A training run. Defaults follow nanoGPT's GPT-2 recipe scaled to one machine.

    init_from: "scratch" (a new model of `model_size` or the n_* fields), a GPT-2 size to fine-tune
    from OpenAI's weights, the path of other weights to fine-tune (any source `gpt2 convert`
    reads), or "resume" (continue the checkpoint in out_dir exactly).
    """

    data_dir: str = _flag("", "folder written by `gpt2 prepare`; a resume defaults to its run's")
    out_dir: str = _flag("out", "the run's folder: checkpoints/, best/, metrics.jsonl")
    init_from: str = _flag(
        "scratch",
        "scratch, resume (continue out_dir's run exactly), a GPT-2 size to fine-tune, or weights "
        "to fine-tune: an HF folder, a .safetensors file, an OpenAI TF folder, or another run's "
        "out_dir (or OUT_DIR/best)",
    )
    backend: str = _flag("functional", "functional, haiku or keras")
    # model (scratch); n_* override model_size's shape, block_size caps the context
    model_size: str = _flag("124M", "shape of a new model: 124M, 355M, 774M or 1558M")
    n_layer: int | None = _flag(None, "transformer blocks, instead of model_size's")
    n_head: int | None = _flag(None, "attention heads, instead of model_size's")
    n_embd: int | None = _flag(None, "width, instead of model_size's")
    block_size: int = _flag(1024, "tokens per training sequence, and the model's context")
    dropout: float = _flag(0.0, "dropout rate in [0, 1), where GPT-2 applies it")
    # optimisation
    batch_size: int = _flag(12, "sequences per micro-batch, over all devices")
    gradient_accumulation_steps: int = _flag(1, "micro-batches whose mean gradient makes one step")
    max_iters: int = _flag(5000, "optimizer steps to train to")
    learning_rate: float = _flag(6e-4, "peak learning rate, after warmup")
    min_lr: float | None = _flag(
        None, "learning rate at the end of the cosine decay (default: learning_rate / 10)"
    )  # Chinchilla's advice, nanoGPT's default
    warmup_iters: int = _flag(100, "steps of linear warmup from 0")
    lr_decay_iters: int | None = _flag(
        None, "step where the cosine decay reaches min_lr (default: max_iters)"
    )
    weight_decay: float = _flag(0.1, "AdamW weight decay (not on biases or LayerNorm)")
    beta1: float = _flag(0.9, "AdamW beta1")
    beta2: float = _flag(0.95, "AdamW beta2")
    grad_clip: float = _flag(1.0, "clip gradients to this global norm; 0 turns it off")
    compute_dtype: str = _flag(
        "float32", "float32 or bfloat16 (bf16 compute over fp32 master weights)"
    )
    seed: int = _flag(1337, "seed of the initial weights, the batches and dropout")
    remat: bool = _flag(
        False, "recompute each block in the backward pass instead of keeping its activations"
    )
    # evaluation, logging, checkpoints
    eval_only: bool = _flag(
        False, "print the starting model's train and val loss; train and save nothing"
    )
    eval_interval: int = _flag(250, "steps between val evaluations (and best/ updates)")
    eval_iters: int = _flag(20, "batches per evaluation of each split")
    log_interval: int = _flag(10, "steps between console and metrics lines")
    save_interval: int = _flag(250, "steps between checkpoints")
    keep_last: int = _flag(3, "checkpoints kept in out_dir/checkpoints")
    tensorboard: bool = _flag(False, "also write TensorBoard event files to out_dir/tensorboard")
    use_wandb: bool = _flag(False, "also log to Weights & Biases (the wandb extra)")
    project_name: str = _flag("gpt2-jax", "the Weights & Biases project")
    run_name: str | None = _flag(None, "the Weights & Biases run name")
    keras_fit: bool = _flag(False, "train with Keras `model.fit` (backend keras only)")
    # LoRA: fine-tune low-rank adapters, the base weights frozen
    lora_rank: int | None = _flag(
        None,
        "fine-tune with LoRA: train adapters of this rank on the --lora-targets projections, "
        "the weights init_from names frozen (default: off, every weight trains)",
    )
    lora_alpha: float | None = _flag(
        None, "LoRA scale numerator: each adapter adds (alpha / rank) * A @ B (default: the rank)"
    )
    lora_targets: str = _flag(
        ",".join(DEFAULT_TARGETS),
        f"comma-separated projections LoRA adapts in every block: {', '.join(TARGETS)}",
    )
    # where it runs (RUNTIME_FIELDS): devices and processes; a resumed run does not inherit them
    mesh: str | None = _flag(
        None, "data=D,fsdp=F: rows over data, parameters over fsdp (default: data=all devices)"
    )
    coordinator: str | None = _flag(
        None, "host:port of process 0, for a run over several processes"
    )
    num_processes: int | None = _flag(None, "processes in a multi-process run")
    process_id: int | None = _flag(None, "this process's index in a multi-process run")

    def __post_init__(self) -> None:
        _check_types(self)
        if self.min_lr is None:
            object.__setattr__(self, "min_lr", self.learning_rate / 10)
        for name, (allowed, what) in _RANGES.items():
            value = getattr(self, name)
            if value is not None and not allowed(value):
                raise GPT2Error(f"{name} must be {what}, got {value}.")
        if not (
            self.init_from in INIT_FROM
            or self.init_from.lower() in SIZE_ALIASES
            or Path(self.init_from).exists()
        ):
            raise GPT2Error(
                f"init_from must be scratch, resume, a GPT-2 size ({', '.join(MODEL_SIZES)}) or "
                f"the path of weights to fine-tune, got {self.init_from!r}, which is none of them."
            )
        from shared.backend import backend_names  # checked before any data or checkpoint is read

        if self.backend not in backend_names():
            raise GPT2Error(
                f"backend must be one of {', '.join(backend_names())}, got {self.backend!r}."
            )
        if self.compute_dtype not in ("float32", "bfloat16"):
            inference_only = (
                " (int8 weights are for inference only: `gpt2 generate` and `gpt2 score` "
                "--dtype int8)"
                if self.compute_dtype == "int8"
                else ""
            )
            raise GPT2Error(
                f"compute_dtype must be float32 or bfloat16, got {self.compute_dtype!r}"
                f"{inference_only}."
            )
        assert self.min_lr is not None  # filled in above
        if self.min_lr > self.learning_rate:
            raise GPT2Error(
                f"min_lr must be at most learning_rate ({self.learning_rate}), got {self.min_lr}."
            )
        if self.keras_fit and self.backend != "keras":
            raise GPT2Error("keras_fit needs backend 'keras'.")
        resolve_model_size(self.model_size)
        self._check_lora()
        self._check_runtime()

    def _check_lora(self) -> None:
        parse_targets(self.lora_targets)
        if self.lora_rank is None:
            if self.lora_alpha is not None:
                raise GPT2Error("lora_alpha scales LoRA adapters; give lora_rank too.")
            return
        if self.init_from == "scratch":
            raise GPT2Error(
                "LoRA fine-tunes existing weights; give init_from a GPT-2 size or weights to "
                "fine-tune, or drop lora_rank to train from scratch."
            )
        if self.sharded:
            raise GPT2Error(
                "LoRA trains on one device; drop --mesh and the multi-process flags, or lora_rank."
            )

    @property
    def sharded(self) -> bool:
        """Whether the run spans a mesh or several processes (LoRA and Keras `fit` take one device)."""
        return self.mesh is not None or (self.num_processes or 1) > 1

    @property
    def lora(self) -> LoraConfig | None:
        """The run's LoRA adapters, None when every weight trains."""
        if self.lora_rank is None:
            return None
        alpha = float(self.lora_rank if self.lora_alpha is None else self.lora_alpha)
        return LoraConfig(self.lora_rank, alpha, parse_targets(self.lora_targets))

    def _check_runtime(self) -> None:
        from shared.distributed import mesh, runtime

        if self.mesh is not None:
            mesh.parse_axes(self.mesh)
        runtime.settings(self.coordinator, self.num_processes, self.process_id)

    @property
    def decay_iters(self) -> int:
        return self.max_iters if self.lr_decay_iters is None else self.lr_decay_iters

    def model_config(self, vocab_size: int) -> GPT2Config:
        """The shape of a model trained from scratch on a vocabulary of `vocab_size`."""
        base = config_for_size(self.model_size)
        return GPT2Config(
            n_embd=self.n_embd or base.n_embd,
            n_head=self.n_head or base.n_head,
            n_layer=self.n_layer or base.n_layer,
            n_vocab=vocab_size,
            n_ctx=self.block_size,
        )

    def replace(self, **changes: Any) -> TrainingConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "the config") -> TrainingConfig:
        _check_keys(values, source)
        return cls(**values)

    @classmethod
    def from_file(cls, path: str | Path) -> TrainingConfig:
        """The config of a `.toml` or `.json` file (unknown keys are an error)."""
        return cls(**read_file(path))  # read_file checked the keys


def _check_keys(values: dict[str, Any], source: str) -> None:
    known = {f.name for f in dataclasses.fields(TrainingConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise GPT2Error(f"Unknown key(s) {unknown} in {source}; allowed keys: {sorted(known)}.")


def read_file(path: str | Path) -> dict[str, Any]:
    """The fields set by a `.toml` or `.json` file (suffix in any case), checked by name only:
    values are checked once, after the command line's flags are merged in."""
    path = Path(path)
    if not path.is_file():
        raise GPT2Error(f"Config file {path} does not exist.")
    parse = FILE_FORMATS.get(path.suffix.lower())
    if parse is None:
        raise GPT2Error(
            f"Config file {path} has the suffix {path.suffix!r}; use one of "
            f"{', '.join(FILE_FORMATS)}."
        )
    try:
        values = parse(text_input.decode(path.read_bytes(), f"Config file {path}"))
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as error:
        raise GPT2Error(
            f"Config file {path} is not valid {path.suffix[1:].upper()}: {error}."
        ) from None
    if not isinstance(values, dict):
        raise GPT2Error(
            f"Config file {path} must hold an object of TrainingConfig fields, not a "
            f"{type(values).__name__}."
        )
    _check_keys(values, str(path))
    return values


_POSITIVE = ("batch_size", "gradient_accumulation_steps", "max_iters", "block_size",
             "eval_interval", "eval_iters", "log_interval", "save_interval", "keep_last",
             "lr_decay_iters", "n_layer", "n_head", "n_embd", "lora_rank")  # fmt: skip
_RANGES: dict[str, tuple[typing.Callable[[Any], bool], str]] = {
    **{name: (lambda value: value >= 1, "at least 1") for name in _POSITIVE},
    "warmup_iters": (lambda value: value >= 0, "at least 0"),
    "learning_rate": (lambda value: 0 < value < math.inf, "a finite number > 0"),
    "min_lr": (lambda value: 0 <= value < math.inf, "a finite number >= 0"),
    "weight_decay": (lambda value: 0 <= value < math.inf, "a finite number >= 0"),
    "lora_alpha": (lambda value: 0 < value < math.inf, "a finite number > 0"),
    "grad_clip": (lambda value: 0 <= value < math.inf, "a finite number >= 0 (0 turns it off)"),
    "dropout": (lambda value: 0 <= value < 1, "in [0, 1)"),
    "beta1": (lambda value: 0 <= value < 1, "in [0, 1)"),
    "beta2": (lambda value: 0 <= value < 1, "in [0, 1)"),
}
"""Each number field's allowed values and how an error says them (nan fails every test); a field
that may be None is checked when given: 0 layers is an error, not "the size's default"."""


def _field_type(field: dataclasses.Field) -> tuple[type, bool]:
    """(scalar type, optional?) of a field annotated like `int | None`."""
    hint = typing.get_type_hints(TrainingConfig)[field.name]
    args = typing.get_args(hint) if isinstance(hint, types.UnionType) else ()
    if args:  # get_type_hints is untyped: the union's members are classes
        return cast(type, next(a for a in args if a is not type(None))), True
    return cast(type, hint), False


def _check_types(config: TrainingConfig) -> None:
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        kind, optional = _field_type(field)
        if value is None and optional:
            continue
        ok = isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            ok = True
        if not ok:
            raise GPT2Error(f"{field.name} must be {kind.__name__}, got {value!r}.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per field (`--max-iters` and `--max_iters`), defaulting to 'not given'."""
    for field in dataclasses.fields(TrainingConfig):
        kind, _ = _field_type(field)
        flags = {f"--{field.name.replace('_', '-')}", f"--{field.name}"}
        names = sorted(flags, key=lambda f: "_" in f)
        help = field.metadata["help"]
        if field.default not in (None, "") and "default" not in help:
            help = f"{help} (default: {field.default})"
        if kind is bool:
            parser.add_argument(
                *names, dest=field.name, action=argparse.BooleanOptionalAction, default=None,
                help=help,
            )  # fmt: skip
        else:
            parser.add_argument(
                *names, dest=field.name, type=kind, default=None, metavar=kind.__name__.upper(),
                help=help,
            )  # fmt: skip


def given_values(args: argparse.Namespace, file: str | None = None) -> dict[str, Any]:
    """The fields the user set: the config file's (if any), overridden by the flags given."""
    base = read_file(file) if file is not None else {}
    given = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(TrainingConfig)
        if getattr(args, f.name, None) is not None
    }
    return {**base, **given}
