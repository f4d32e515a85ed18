"""`gpt2 score`: how likely a model finds a text, as mean NLL, perplexity and bits per byte, read
in context-long windows that slide along it."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from shared import text_input
from shared.cli.options import add_checkpoint, add_model_options, check_model_source, load_model
from shared.errors import GPT2Error


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "score", help="measure a model's perplexity on a text", description=__doc__
    )
    text = parser.add_mutually_exclusive_group(required=True)
    text.add_argument("--file", type=Path, help="UTF-8 text file to score")
    text.add_argument("--text", help="text to score")
    parser.add_argument(
        "--context", default="",
        help="text that comes before the scored text and conditions it without being scored "
        "(log p(text | context))",
    )  # fmt: skip
    parser.add_argument(
        "--stride", type=int, default=None,
        help="tokens between the starts of consecutive windows, 1 to the context (default: half "
        "the context); a smaller stride gives each token more context and costs more windows",
    )  # fmt: skip
    parser.add_argument(
        "--batch-size", "--batch_size", type=int, default=1, dest="batch_size",
        help="windows per compiled call (default: 1)",
    )  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    add_checkpoint(parser, "score with")
    add_model_options(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    check_model_source(args)
    if args.stride is not None and args.stride < 1:
        raise ValueError(f"--stride must be at least 1, got {args.stride}.")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {args.batch_size}.")
    text = _read(args.file) if args.file is not None else text_input.argument(args.text, "--text")
    context = text_input.argument(args.context, "--context")
    if not text:
        raise ValueError(f"{'--file ' + str(args.file) if args.file else '--text'} is empty.")
    model = load_model(args)
    score = model.score(
        text, context=context, stride=args.stride, batch_size=args.batch_size, progress=True
    )
    figures = {
        "tokens": score.n_tokens,
        "bytes": score.n_bytes,
        "n_ctx": model.config.n_ctx,
        "stride": score.stride,
        "log_prob": score.log_prob,
        "nll": score.nll,
        "perplexity": score.perplexity,
        "bits_per_byte": score.bits_per_byte,
    }
    if args.json:
        print(json.dumps(figures))
        return 0
    print(
        f"{score.n_tokens:,} tokens ({score.n_bytes:,} bytes) in windows of up to "
        f"{model.config.n_ctx} tokens, {score.stride} apart"
    )
    print(f"log-prob       {score.log_prob:.4f} nats")
    print(f"mean NLL       {score.nll:.4f} nats/token")
    print(f"perplexity     {score.perplexity:.6g}")
    print(f"bits per byte  {score.bits_per_byte:.4f}")
    return 0


def _read(path: Path) -> str:
    if not path.is_file():
        raise GPT2Error(f"--file {path} is not a file; give the text file to score.")
    return "".join(text_input.read_chunks(path))
