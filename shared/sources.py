"""What a weights source names, told from its paths alone: a command refuses a source that holds
no weights before it imports the libraries that read them."""

from __future__ import annotations

import os
from pathlib import Path

from shared.config import MODEL_SIZES, SIZE_ALIASES, resolve_model_size
from shared.errors import GPT2Error

CANONICAL_NAME = "model.canonical.safetensors"
"""The project's own weights file; also the converted cache of a size, beside OpenAI's files."""
HF_WEIGHTS_NAME = "model.safetensors"
RUN_FOLDERS = ("checkpoints", "best")
"""A `gpt2 train` out_dir's checkpoint folders: the last ones by step, the best by val loss."""

FORMATS = (
    "an OpenAI folder (hparams.json + checkpoint), a Hugging Face folder or model.safetensors, a "
    "gpt2-jax .safetensors file, or the out_dir of a `gpt2 train` run that has saved a checkpoint"
)
"""What a weights source may be, for the errors that name what was looked for."""

Source = str | os.PathLike[str]


def check_weights_source(source: Source) -> None:
    """Refuse a source that is neither a file, nor a folder holding weights, nor a size name."""
    path = Path(source)
    if path.is_file() or (path.is_dir() and holds_weights(path)) or names_a_size(source):
        return
    if not path.exists():
        sizes = ", ".join([*MODEL_SIZES, *SIZE_ALIASES])
        raise GPT2Error(f"{source} does not exist, and it is not a GPT-2 size name ({sizes}).")
    raise GPT2Error(f"{source} holds no GPT-2 weights; expected {FORMATS}.")


def check_run_dir(out_dir: Source) -> None:
    """Refuse an out_dir to resume or sample that does not exist."""
    if not Path(out_dir).is_dir():
        raise GPT2Error(
            f"{out_dir} does not exist, so it holds no training run to resume or sample; give the "
            "out_dir of a `gpt2 train` run that has saved a checkpoint."
        )


def holds_weights(folder: Path) -> bool:
    """True when `folder` holds a weights file, OpenAI's checkpoint, or a run's saved step."""
    if any((folder / name).exists() for name in (CANONICAL_NAME, HF_WEIGHTS_NAME, "hparams.json")):
        return True
    return _saved_step(folder / RUN_FOLDERS[0]) or (
        folder.name in RUN_FOLDERS and _saved_step(folder)
    )


def names_a_size(source: Source) -> bool:
    try:
        resolve_model_size(str(source))
    except ValueError:
        return False
    return True


def _saved_step(folder: Path) -> bool:
    """True when `folder` has a step folder (orbax names each by its step; an unfinished save's
    name has a suffix)."""
    return folder.is_dir() and any(child.name.isdigit() for child in folder.iterdir())
