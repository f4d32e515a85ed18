"""OpenAI's TensorFlow 1 checkpoint -> the canonical tree.

OpenAI stores each block under `model/h{i}/` and its projections as 1x1 convolutions
([1, in, out]); the canonical tree squeezes that leading 1 and stacks the blocks on axis 0.
TensorFlow is imported only inside `load_tf_checkpoint`, so everything that reads the converted
cache starts without it.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from types import ModuleType
from typing import Protocol

import numpy as np

from shared.config import GPT2Config
from shared.errors import GPT2Error
from shared.params import Params, canonical_shapes, unflatten
from shared.weights._files import check_finite

GLOBAL_NAMES = {
    "wte": "model/wte",
    "wpe": "model/wpe",
    "ln_f/g": "model/ln_f/g",
    "ln_f/b": "model/ln_f/b",
}
"""Canonical path -> OpenAI variable name, for the tensors outside the blocks."""

BLOCK_NAMES = {
    "blocks/ln_1/g": "ln_1/g",
    "blocks/ln_1/b": "ln_1/b",
    "blocks/attn/c_attn/w": "attn/c_attn/w",
    "blocks/attn/c_attn/b": "attn/c_attn/b",
    "blocks/attn/c_proj/w": "attn/c_proj/w",
    "blocks/attn/c_proj/b": "attn/c_proj/b",
    "blocks/ln_2/g": "ln_2/g",
    "blocks/ln_2/b": "ln_2/b",
    "blocks/mlp/c_fc/w": "mlp/c_fc/w",
    "blocks/mlp/c_fc/b": "mlp/c_fc/b",
    "blocks/mlp/c_proj/w": "mlp/c_proj/w",
    "blocks/mlp/c_proj/b": "mlp/c_proj/b",
}
"""Canonical path -> OpenAI name under `model/h{i}/`; the `/w` ones are stored as [1, in, out]."""


class CorruptCheckpointError(GPT2Error):
    """The checkpoint's files are damaged (bad checksum, truncated, missing), so they should be
    deleted and downloaded again rather than trusted. `detail` is the underlying reason."""

    def __init__(self, message: str, detail: str) -> None:
        super().__init__(message)
        self.detail = detail


def read_hparams(folder: str | os.PathLike[str]) -> GPT2Config:
    """The `GPT2Config` stored as `hparams.json` beside the checkpoint."""
    path = Path(folder) / "hparams.json"
    try:
        hparams = json.loads(path.read_text())
    except FileNotFoundError:
        raise CorruptCheckpointError(
            f"{path} is missing; the checkpoint is incomplete.", "hparams.json is missing"
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        detail = f"hparams.json is not valid JSON: {err}"
        raise CorruptCheckpointError(f"{path} is not valid JSON ({err}).", detail) from None
    try:
        return GPT2Config.from_hparams(hparams)
    except (TypeError, ValueError) as err:
        raise GPT2Error(f"{path} does not describe a GPT-2 model: {err}") from None


def checkpoint_prefix(folder: str | os.PathLike[str]) -> Path:
    """The path prefix of the TF checkpoint (`<folder>/model.ckpt` for OpenAI's downloads).

    Read from the `checkpoint` file when there is one; only its file name is used, because TF may
    have recorded an absolute path from the machine that wrote it.
    """
    folder = Path(folder)
    index = folder / "checkpoint"
    if index.is_file():
        match = re.search(r'^model_checkpoint_path:\s*"(.+)"', index.read_text(), re.MULTILINE)
        if match:
            return folder / Path(match.group(1)).name
    return folder / "model.ckpt"


def openai_name(path: str, layer: int | None = None) -> str:
    """The OpenAI variable name of a canonical path (of block `layer` for `blocks/...`)."""
    if path in GLOBAL_NAMES:
        return GLOBAL_NAMES[path]
    return f"model/h{layer}/{BLOCK_NAMES[path]}"


def load_tf_checkpoint(folder: str | os.PathLike[str]) -> tuple[Params, GPT2Config]:
    """Read OpenAI's checkpoint in `folder` into a canonical tree of float32 numpy arrays.

    Raises `CorruptCheckpointError` for damaged files and `GPT2Error` for a checkpoint that is
    readable but not the GPT-2 its `hparams.json` describes, or that holds NaN or Inf.
    """
    folder = Path(folder)
    config = read_hparams(folder)
    prefix = checkpoint_prefix(folder)
    tf = _import_tensorflow()
    corrupt = (tf.errors.OpError, IndexError)  # TF reports a short data file as IndexError.
    try:
        reader = tf.train.load_checkpoint(str(prefix))
        available = reader.get_variable_to_shape_map()
        flat = {}
        for path, shape in canonical_shapes(config).items():
            if path in GLOBAL_NAMES:
                flat[path] = _read(reader, available, openai_name(path), shape)
            else:
                layer_shape = _openai_shape(path, shape[1:])
                layers = [
                    _read(reader, available, openai_name(path, i), layer_shape)
                    for i in range(config.n_layer)
                ]
                flat[path] = np.stack(layers).reshape(shape)
    except corrupt as err:
        detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if isinstance(err, _not_damage(tf)):  # the files may be fine: keep them
            raise GPT2Error(
                f"Could not read the TensorFlow checkpoint in {folder} ({detail})."
            ) from None
        raise CorruptCheckpointError(
            f"The TensorFlow checkpoint in {folder} is corrupt or truncated ({detail}); delete "
            "that folder and download it again.",
            detail,
        ) from None
    check_finite(flat, folder)
    return unflatten(flat), config


def _not_damage(tf: ModuleType) -> tuple[type[Exception], ...]:
    """TF's read errors that say nothing about the files' bytes (rights, memory)."""
    return (tf.errors.PermissionDeniedError, tf.errors.ResourceExhaustedError)


def _openai_shape(path: str, layer_shape: tuple[int, ...]) -> tuple[int, ...]:
    return (1, *layer_shape) if path.endswith("/w") else layer_shape


class _TensorReader(Protocol):
    """What is read of TensorFlow's `CheckpointReader` (`tf.train.load_checkpoint`)."""

    def get_tensor(self, name: str) -> np.ndarray: ...


def _read(reader: _TensorReader, available: dict, name: str, shape: tuple[int, ...]) -> np.ndarray:
    if name not in available:
        raise GPT2Error(
            f"The checkpoint has no variable {name!r}; it is not an OpenAI GPT-2 checkpoint "
            "matching its hparams.json."
        )
    actual = tuple(available[name])
    if actual != shape:
        raise GPT2Error(
            f"Checkpoint variable {name!r} has shape {actual}, but hparams.json needs {shape}."
        )
    return np.asarray(reader.get_tensor(name), dtype=np.float32)


def _import_tensorflow() -> ModuleType:
    # Quiet: TensorFlow's C++ log (oneDNN notices, GPU plugin errors on machines with CUDA) says
    # nothing a checkpoint read needs; a failed read raises with the same words.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    # TensorFlow may import Keras; keep it on JAX so the keras backend still works afterwards.
    os.environ.setdefault("KERAS_BACKEND", "jax")
    try:
        import tensorflow as tf
    except ImportError:
        raise GPT2Error(
            "Reading OpenAI's TensorFlow checkpoint needs TensorFlow; install it with "
            "`pip install 'gpt2-jax[tf]'` (only the first load of each size uses it)."
        ) from None
    return tf
