"""Options several commands share, spelled both `--kebab-case` and the seed's `--snake_case`."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from shared.sources import check_weights_source

if TYPE_CHECKING:
    from shared.api import GPT2


def add_models_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--models-dir", "--models_dir", default=None,
        help="where checkpoints are cached (default: $GPT2_MODELS_DIR or the user cache folder)",
    )  # fmt: skip


def add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model-size", "--model_size", default=None,
        help="124M, 355M, 774M, 1558M (or gpt2, gpt2-medium, gpt2-large, gpt2-xl); default 124M",
    )  # fmt: skip
    parser.add_argument(
        "--backend", default=None,
        help="functional, haiku or keras; default functional, or with --checkpoint of a "
        "training run the backend it was trained on",
    )  # fmt: skip
    add_models_dir(parser)
    parser.add_argument(
        "--dtype", default="float32", choices=["float32", "bfloat16", "int8"],
        help="weight dtype; int8 holds the projections and the tied embedding as int8 with one "
        "float32 scale per output channel (weight-only, a quarter of float32's bytes)",
    )  # fmt: skip


def add_checkpoint(parser: argparse.ArgumentParser, use: str) -> None:
    parser.add_argument(
        "--checkpoint", default=None, metavar="PATH",
        help=f"{use} other weights than OpenAI's: a `gpt2 train` out_dir (its newest "
        "checkpoint), OUT_DIR/best (the best by val loss), or an HF folder or model.safetensors, "
        "a canonical .safetensors or an OpenAI TF folder",
    )  # fmt: skip


def check_model_source(args: argparse.Namespace) -> None:
    """Refuse --model-size with --checkpoint, whose weights have their own size, and a
    --checkpoint that names nothing, before the model's libraries are imported."""
    if args.checkpoint and args.model_size:
        raise ValueError(
            f"--model-size {args.model_size} does not apply to --checkpoint {args.checkpoint}, "
            "whose weights have their own size; give one of them."
        )
    if args.checkpoint:
        check_weights_source(args.checkpoint)


def load_model(args: argparse.Namespace, mesh: str | None = None) -> GPT2:
    """The model the options of `add_checkpoint` and `add_model_options` name, with both caches
    of compiled programs on."""
    from shared import api, compilation_cache

    compilation_cache.enable()
    if args.checkpoint:
        return api.load_checkpoint(
            args.checkpoint, args.backend, models_dir=args.models_dir, dtype=args.dtype, mesh=mesh
        )
    return api.load_model(
        args.model_size or "124M", args.backend or "functional", models_dir=args.models_dir,
        dtype=args.dtype, mesh=mesh,
    )  # fmt: skip


def unescape(text: str) -> str:
    r"""Turn the shell-typed escapes `\n`, `\t` and `\\` into the characters they name."""
    out, chars = [], iter(text)
    for char in chars:
        if char != "\\":
            out.append(char)
            continue
        following = next(chars, "")
        out.append({"n": "\n", "t": "\t", "\\": "\\"}.get(following, "\\" + following))
    return "".join(out)
