"""Weights I/O: OpenAI's downloads, Hugging Face files, our own canonical cache and training runs'
checkpoints, all read into and written from the one canonical tree.

`resolve(source)` is the entry point: it tells once what a source is (a size name, an OpenAI, Hugging
Face or canonical file or folder, a `gpt2 train` out_dir) and gives its tree, config and tokenizer.
A size's first use downloads OpenAI's checkpoint and converts it (`load_pretrained`, the only time
TensorFlow is imported); later uses read the converted `model.canonical.safetensors` beside it.
`convert` backs the `gpt2 convert` command.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shared.config import GPT2Config
from shared.errors import GPT2Error, check_writable
from shared.params import Params
from shared.sources import CANONICAL_NAME, FORMATS, check_weights_source, holds_weights
from shared.weights import openai
from shared.weights.canonical import is_canonical, load_canonical, save_canonical
from shared.weights.hf import WEIGHTS_NAME as HF_NAME
from shared.weights.hf import load_hf, save_hf
from shared.weights.openai import download, downloaded_sizes, models_dir, resolve_size
from shared.weights.tf_checkpoint import CorruptCheckpointError, load_tf_checkpoint

if TYPE_CHECKING:
    from shared.tokenizer import TextTokenizer

logger = logging.getLogger(__name__)

__all__ = [
    "CANONICAL_NAME",
    "Resolved",
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
    "resolve",
    "save_canonical",
    "save_hf",
]

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
    the same way forever. A cache that cannot be written (a read-only, pre-filled one) only
    warns: the weights converted in memory are returned all the same.
    """
    size = resolve_size(size)
    folder = openai.size_dir(size, models_dir)
    cache = folder / CANONICAL_NAME
    if cache.is_file():
        try:
            tree, config = load_canonical(cache)
        except GPT2Error as err:
            logger.warning("%s Rebuilding it from OpenAI's checkpoint.", err)
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
    try:
        advice = f"the weights converted in memory are used, and each run converts {size} again"
        save_canonical(tree, config, cache, advice=advice)
    except GPT2Error as err:
        logger.warning("%s", err)
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
    raise GPT2Error(f"{path} is not a GPT-2 checkpoint; expected {FORMATS}.")


@dataclasses.dataclass(eq=False)
class Resolved:
    """What a weights source holds: the canonical tree, its config and how its text is read.

    kind: "size" (OpenAI's, by name), "openai", "hf", "canonical" or "run" (a `gpt2 train`
    out_dir or its `best/`). backend and meta: a run's backend and its checkpoint's metadata
    (None for other sources).
    """

    tree: Params
    config: GPT2Config
    kind: str
    backend: str | None = None
    meta: dict[str, Any] | None = None
    read_tokenizer: Callable[[], TextTokenizer] = dataclasses.field(repr=False, kw_only=True)

    @functools.cached_property
    def tokenizer(self) -> TextTokenizer:
        """The tokenizer the weights were trained with, read on first use (so converting
        weights never fetches one): GPT-2's BPE (OpenAI's folders carry its files; other
        sources take the downloaded 124M ones), or a run's character alphabet."""
        return self.read_tokenizer()


def resolve(source: Source, *, models_dir: Source | None = None, progress: bool = True) -> Resolved:
    """The weights of `source`: an OpenAI size name or alias (downloaded to `models_dir` if need
    be, with a progress bar unless `progress` is False), an OpenAI TF folder, a Hugging Face
    folder or `model.safetensors`, a canonical `.safetensors`, or a `gpt2 train` out_dir (its
    newest checkpoint; `out_dir/best` the best by val loss).

    A size name wins over a folder of that name holding no weights, such as the `gpt2` package
    folder of this repository's root.
    """
    path = Path(source)
    check_weights_source(source)
    if not path.exists() or (path.is_dir() and not holds_weights(path)):
        return pretrained(resolve_size(str(source)), models_dir=models_dir, progress=progress)
    kind = detect_format(path)
    if kind == "run":
        return _run(path, models_dir)
    if kind == "openai":
        tree, config = load_tf_checkpoint(path)
    elif kind == "hf":
        tree, config = load_hf(path)
    else:
        if path.is_dir():
            path = path / CANONICAL_NAME if (path / CANONICAL_NAME).is_file() else path / HF_NAME
        tree, config = load_canonical(path)

    def gpt2_tokenizer() -> TextTokenizer:
        from shared.tokenizer import EOT_ID, Tokenizer, downloaded_gpt2_tokenizer

        if config.n_vocab != EOT_ID + 1:
            raise ValueError(
                f"{source} has a vocabulary of {config.n_vocab} ids where GPT-2's tokenizer has "
                f"{EOT_ID + 1}; a weights file is read with that tokenizer, so sample a "
                "character-level model from its training run's out_dir, which holds its alphabet."
            )
        if kind == "openai":  # OpenAI's folders carry the tokenizer's files
            return Tokenizer(source)
        return downloaded_gpt2_tokenizer(models_dir, progress=False)

    return Resolved(tree, config, kind, read_tokenizer=gpt2_tokenizer)


def pretrained(
    size: str,
    *,
    models_dir: Source | None = None,
    base_url: str | None = None,
    progress: bool = True,
) -> Resolved:
    """OpenAI's GPT-2 `size` (`load_pretrained`) with the tokenizer of its folder, which this
    library manages and so keeps the tokenizer's derived ranks in."""
    tree, config, folder = load_pretrained(size, models_dir, base_url, progress)

    def folder_tokenizer() -> TextTokenizer:
        from shared.tokenizer import Tokenizer

        return Tokenizer(folder, cache_ranks=True)

    return Resolved(tree, config, "size", read_tokenizer=folder_tokenizer)


def _run(path: Path, models_dir: Source | None) -> Resolved:
    """A training run's checkpoint with the tokenizer its data was prepared with. Orbax is read
    here only, so other sources start without it."""
    from shared.tokenizer import CharTokenizer, downloaded_gpt2_tokenizer
    from shared.weights import runs

    tree, config, meta = runs.load_for_inference(path)
    data = meta["data"]

    def run_tokenizer() -> TextTokenizer:
        if data["tokenizer"] == "char":
            return CharTokenizer(data["alphabet"])
        return downloaded_gpt2_tokenizer(models_dir, progress=False)

    return Resolved(tree, config, "run", meta["backend"], meta, read_tokenizer=run_tokenizer)


def load_weights(src: Source) -> tuple[Params, GPT2Config]:
    """The (canonical tree, config) of any source `resolve` reads."""
    resolved = resolve(src)
    return resolved.tree, resolved.config


def convert(src: Source, dst: Source, to: str, *, merge_lora: bool = False) -> Path:
    """Convert the checkpoint at `src` (any format, or a size name) to `to` at `dst`.

    `to="hf"` writes a folder `dst` that `transformers` loads; `to="canonical"` writes the file
    `dst`, or `dst/model.canonical.safetensors` when `dst` is a folder or ends with a separator
    (`new_dir/`). A LoRA run is written only with `merge_lora`, which says the adapters are
    merged into its base weights. Returns what was written.
    """
    if to not in ("hf", "canonical"):
        raise GPT2Error(f"Cannot convert to {to!r}; choose 'hf' or 'canonical'.")
    target = Path(dst) if to == "hf" else _canonical_file(dst)
    check_writable("dst", target, folder=to == "hf")  # before a possible download
    _check_merge_lora(src, merge_lora)
    weights = resolve(src)
    if to == "hf":
        return save_hf(weights.tree, weights.config, target)
    return save_canonical(weights.tree, weights.config, target)


def _check_merge_lora(src: Source, merge_lora: bool) -> None:
    """A LoRA run's adapters are merged into its base only when asked: the result is a new
    model of the base's size, not the small run folder."""
    from shared.weights import runs

    path = Path(src)
    is_run = path.is_dir() and holds_weights(path) and detect_format(path) == "run"
    lora = is_run and "lora" in runs.read_meta(*runs.run_folder(path))[1]
    if lora and not merge_lora:
        raise GPT2Error(
            f"{src} is a LoRA run, which holds adapters over its base weights; add --merge-lora "
            "to write the base with the adapters merged in."
        )
    if merge_lora and not lora:
        raise GPT2Error(f"--merge-lora merges a LoRA run's adapters, and {src} is not a LoRA run.")


def _canonical_file(dst: Source) -> Path:
    """The file a canonical conversion to `dst` writes: `dst` itself, or `CANONICAL_NAME` inside
    it when it names a folder (`Path` drops the trailing separator that says so)."""
    separators = tuple(sep for sep in (os.sep, os.altsep) if sep)
    if Path(dst).is_dir() or os.fspath(dst).endswith(separators):
        return Path(dst) / CANONICAL_NAME
    return Path(dst)
