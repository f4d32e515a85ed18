"""Weights I/O: OpenAI's downloads, Hugging Face files and our own canonical cache, all read into
and written from the one canonical tree.

`load_pretrained("124M")` is the entry point for inference: the first call downloads OpenAI's
checkpoint and converts it (the only time TensorFlow is imported); later calls read the converted
`model.canonical.safetensors` beside it. `convert` backs the `gpt2 convert` command.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from shared.config import GPT2Config
from shared.errors import GPT2Error, check_writable
from shared.params import Params
from shared.weights import openai
from shared.weights.canonical import is_canonical, load_canonical, save_canonical
from shared.weights.hf import WEIGHTS_NAME as HF_NAME
from shared.weights.hf import load_hf, save_hf
from shared.weights.openai import download, downloaded_sizes, models_dir, resolve_size
from shared.weights.tf_checkpoint import CorruptCheckpointError, load_tf_checkpoint

__all__ = [
    "CANONICAL_NAME",
    "convert",
    "detect_format",
    "download",
    "downloaded_sizes",
    "load_canonical",
    "load_hf",
    "load_pretrained",
    "load_tf_checkpoint",
    "load_weights",
    "models_dir",
    "save_canonical",
    "save_hf",
]

CANONICAL_NAME = "model.canonical.safetensors"
"""The converted cache of a size, beside OpenAI's files in `<models_dir>/<size>/`."""

Source = str | os.PathLike[str]


def load_pretrained(
    size: str,
    models_dir: Source | None = None,
    base_url: str | None = None,
    progress: bool = True,
) -> tuple[Params, GPT2Config, Path]:
    """OpenAI's GPT-2 `size` as (canonical tree of numpy arrays, config, folder).

    The folder also holds `encoder.json` and `vocab.bpe` for the tokenizer. A checkpoint whose
    files turn out corrupt is deleted, so the next call downloads it again instead of failing
    the same way forever.
    """
    size = resolve_size(size)
    folder = openai.size_dir(size, models_dir)
    cache = folder / CANONICAL_NAME
    if cache.is_file():
        try:
            tree, config = load_canonical(cache)
        except GPT2Error as err:
            warnings.warn(f"{err} Rebuilding it from OpenAI's checkpoint.", stacklevel=2)
            cache.unlink(missing_ok=True)
        else:
            files = openai.TOKENIZER_FILES
            download(size, models_dir, base_url, files=files, progress=progress)
            return tree, config, folder
    download(size, models_dir, base_url, progress=progress)
    try:
        tree, config = load_tf_checkpoint(folder)
    except CorruptCheckpointError as err:
        for name in openai.CHECKPOINT_FILES:
            (folder / name).unlink(missing_ok=True)
        raise GPT2Error(
            f"The downloaded GPT-2 {size} checkpoint in {folder} is corrupt ({err.detail}); its "
            "files were deleted, so run again to download them afresh."
        ) from None
    save_canonical(tree, config, cache)
    return tree, config, folder


def detect_format(path: Source) -> str:
    """`"openai"`, `"hf"`, `"canonical"` or `"run"` (a `gpt2 train` out_dir, or its `best/`) for
    a weights folder or file, else a `GPT2Error`."""
    path = Path(path)
    if path.is_dir():
        if (path / "checkpoints").is_dir():
            return "run"
        if (path / CANONICAL_NAME).is_file() and (path / HF_NAME).is_file():
            raise GPT2Error(
                f"{path} holds both {HF_NAME} and {CANONICAL_NAME}, so which weights to load is "
                f"ambiguous; pass the file you mean, {path / HF_NAME} or {path / CANONICAL_NAME}."
            )
        if (path / CANONICAL_NAME).is_file():
            return "canonical"
        if (path / "hparams.json").is_file() and (
            (path / "checkpoint").is_file() or (path / "model.ckpt.index").is_file()
        ):
            return "openai"
        if (path / HF_NAME).is_file():
            return "canonical" if is_canonical(path / HF_NAME) else "hf"
        if path.name in ("checkpoints", "best"):  # a run's checkpoint folder: out/best
            return "run"
    elif path.is_file() and is_canonical(path):
        return "canonical"
    elif path.is_file() and path.suffix == ".safetensors":
        return "hf"
    raise GPT2Error(
        f"{path} is not a GPT-2 checkpoint; expected an OpenAI folder (hparams.json + checkpoint), "
        "a Hugging Face folder or model.safetensors, a gpt2-jax .safetensors file, or the "
        "out_dir of `gpt2 train`."
    )


def load_weights(src: Source) -> tuple[Params, GPT2Config]:
    """Load any supported checkpoint (path of any format, or an OpenAI size name).

    A size name wins over a folder of that name holding no weights, such as the `gpt2` package
    folder of this repository's root.
    """
    path = Path(src)
    if not path.exists() or (path.is_dir() and not _holds_weights(path) and _names_a_size(src)):
        try:
            size = resolve_size(str(src))
        except GPT2Error:
            raise GPT2Error(f"{src} does not exist and is not a GPT-2 size name.") from None
        tree, config, _ = load_pretrained(size)
        return tree, config
    kind = detect_format(path)
    if kind == "run":
        from shared.training.checkpoints import load_for_inference

        tree, config, _ = load_for_inference(path)
        return tree, config
    if kind == "openai":
        return load_tf_checkpoint(path)
    if kind == "hf":
        return load_hf(path)
    if path.is_dir():
        path = path / CANONICAL_NAME if (path / CANONICAL_NAME).is_file() else path / HF_NAME
    return load_canonical(path)


def _holds_weights(folder: Path) -> bool:
    return any(
        (folder / name).exists()
        for name in (CANONICAL_NAME, HF_NAME, "hparams.json", "checkpoints")
    )


def _names_a_size(src: Source) -> bool:
    try:
        resolve_size(str(src))
    except GPT2Error:
        return False
    return True


def convert(src: Source, dst: Source, to: str) -> Path:
    """Convert the checkpoint at `src` (any format, or a size name) to `to` at `dst`.

    `to="hf"` writes a folder `dst` that `transformers` loads; `to="canonical"` writes the file
    `dst`, or `dst/model.canonical.safetensors` when `dst` is a folder or ends with a separator
    (`new_dir/`). Returns what was written.
    """
    if to not in ("hf", "canonical"):
        raise GPT2Error(f"Cannot convert to {to!r}; choose 'hf' or 'canonical'.")
    target = Path(dst) if to == "hf" else _canonical_file(dst)
    check_writable("dst", target, folder=to == "hf")  # before a possible download
    tree, config = load_weights(src)
    if to == "hf":
        return save_hf(tree, config, target)
    return save_canonical(tree, config, target)


def _canonical_file(dst: Source) -> Path:
    """The file a canonical conversion to `dst` writes: `dst` itself, or `CANONICAL_NAME` inside
    it when it names a folder (`Path` drops the trailing separator that says so)."""
    separators = tuple(sep for sep in (os.sep, os.altsep) if sep)
    if Path(dst).is_dir() or os.fspath(dst).endswith(separators):
        return Path(dst) / CANONICAL_NAME
    return Path(dst)
