"""The project's own weights file: the canonical tree in one safetensors file, config included.

It is what `load_pretrained` caches after the first conversion, so later starts read plain arrays
(memory-mapped, no TensorFlow). Keys are the canonical '/'-paths (`blocks/attn/c_attn/w`); the
metadata carries the format name, its version and the config as `hparams.json`-style JSON.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.numpy

from shared.atomic import atomic_path
from shared.config import GPT2Config
from shared.errors import FREE_WRITABLE_PATH, GPT2Error, writing
from shared.params import Params, flatten, unflatten, validate
from shared.weights._files import read_metadata, read_safetensors

FORMAT = "gpt2-jax-canonical"
VERSION = "1"


def save_canonical(
    tree: Mapping[str, Any],
    config: GPT2Config,
    path: str | os.PathLike[str],
    *,
    advice: str = FREE_WRITABLE_PATH,
) -> Path:
    """Write `tree` (checked against `config`) to `path` atomically and return `path`; a file
    that cannot be written is a `GPT2Error` ending with `advice`."""
    path = Path(path)
    try:
        validate(tree, config)
    except ValueError as err:
        raise GPT2Error(f"Cannot save {path}: {err}") from None
    flat = {name: np.ascontiguousarray(np.asarray(leaf)) for name, leaf in flatten(tree).items()}
    metadata = {"format": FORMAT, "version": VERSION, "config": json.dumps(config.to_hparams())}
    with writing(path, advice), atomic_path(path) as tmp:
        safetensors.numpy.save_file(flat, str(tmp), metadata=metadata)
    return path


def is_canonical(path: str | os.PathLike[str]) -> bool:
    """True when `path` is a safetensors file whose metadata names this format."""
    metadata = read_metadata(path)
    return metadata is not None and metadata.get("format") == FORMAT


def load_canonical(path: str | os.PathLike[str]) -> tuple[Params, GPT2Config]:
    """Read a file written by `save_canonical`: (tree of numpy arrays, config)."""
    flat, metadata = read_safetensors(path)
    if metadata.get("format") != FORMAT:
        raise GPT2Error(
            f"{path} is not a gpt2-jax canonical weights file (its format is "
            f"{metadata.get('format')!r}); convert it with `gpt2 convert` first."
        )
    if metadata.get("version") != VERSION:
        raise GPT2Error(
            f"{path} is canonical format version {metadata.get('version')!r}, but this gpt2-jax "
            f"reads version {VERSION}; upgrade gpt2-jax or convert the file again."
        )
    try:
        config = GPT2Config.from_hparams(json.loads(metadata["config"]))
        tree = unflatten(flat)
        validate(tree, config)
    except (KeyError, TypeError, ValueError) as err:
        raise GPT2Error(f"{path} is a damaged canonical weights file ({err}).") from None
    return tree, config
