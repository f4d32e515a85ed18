"""Options several commands share, spelled both `--kebab-case` and the seed's `--snake_case`."""

from __future__ import annotations

import argparse


def add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model-size", "--model_size", default="124M",
        help="124M, 355M, 774M, 1558M (or gpt2, gpt2-medium, gpt2-large, gpt2-xl); default 124M",
    )  # fmt: skip
    parser.add_argument(
        "--backend", default=None,
        help="functional, haiku or keras; default functional, or with --checkpoint the backend "
        "it was trained on",
    )  # fmt: skip
    parser.add_argument(
        "--models-dir", "--models_dir", default=None,
        help="where checkpoints are cached (default: $GPT2_MODELS_DIR or the user cache folder)",
    )  # fmt: skip
    parser.add_argument(
        "--dtype", default="float32", choices=["float32", "bfloat16"], help="weight dtype"
    )


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
