"""`gpt2 download` and `gpt2 convert`: fetch OpenAI's checkpoints, move weights between formats."""

from __future__ import annotations

import argparse
from types import SimpleNamespace

from shared.cli import options


def _add_download(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "download",
        help="download and convert OpenAI checkpoints into the cache",
        description="Download OpenAI's GPT-2 files for each size and convert them once to the fast "
        "local format, so later runs start without TensorFlow.",
    )
    parser.add_argument("sizes", nargs="+", metavar="SIZE", help="124M, 355M, 774M or 1558M")
    options.add_models_dir(parser)
    parser.set_defaults(run=_run_download)


def _run_download(args: argparse.Namespace) -> int:
    from shared.config import resolve_model_size

    sizes = [resolve_model_size(size) for size in args.sizes]  # before any download or import
    from shared import weights

    for size in sizes:
        _, config, folder = weights.load_pretrained(size, models_dir=args.models_dir)
        print(f"{size}: {config.n_params:,} parameters ready in {folder}")
    return 0


def _add_convert(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="convert weights between OpenAI TF, HF safetensors and the canonical format",
        description="Convert GPT-2 weights. SRC is an OpenAI TF checkpoint folder, an HF "
        "model.safetensors (file or folder with config.json) or a canonical .safetensors file.",
    )
    parser.add_argument(
        "src",
        help="source (format detected): an OpenAI or HF folder or file, a canonical file, the "
        "--out-dir of `gpt2 train` (or OUT_DIR/best), or a size name such as 124M (downloaded if need be)",
    )
    parser.add_argument("dst", help="destination folder (hf) or file (canonical)")
    parser.add_argument("--to", required=True, choices=["hf", "canonical"], help="output format")
    parser.add_argument(
        "--merge-lora",
        action="store_true",
        help="SRC is a LoRA run: write its base weights with the adapters merged in "
        "(w + alpha/rank * A @ B), a plain GPT-2 any reader loads",
    )
    parser.set_defaults(run=_run_convert)


def _run_convert(args: argparse.Namespace) -> int:
    from shared.sources import check_weights_source

    check_weights_source(args.src)  # before the weights libraries load
    from shared import weights

    written = weights.convert(args.src, args.dst, args.to, merge_lora=args.merge_lora)
    print(f"wrote {written}")
    return 0


download = SimpleNamespace(add_parser=_add_download)
convert = SimpleNamespace(add_parser=_add_convert)
