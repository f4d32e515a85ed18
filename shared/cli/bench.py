"""`gpt2 bench`: generation speed on random weights, with baselines measured in the same run."""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("bench", help="measure generation speed", description=__doc__)
    parser.add_argument("--model-size", "--model_size", default="124M")
    parser.add_argument("--backend", default="functional")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--prompt-len", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--no-baseline", action="store_true", help="skip the slow recompute loop")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import jax

    from shared import benchmarks

    results = benchmarks.generation_report(
        args.model_size, args.backend, args.prompt_len, args.new_tokens, args.dtype,
        baseline=not args.no_baseline,
    )  # fmt: skip
    device = f"{jax.devices()[0].device_kind} ({platform.processor() or platform.machine()})"
    title = (
        f"{args.model_size} {args.backend} {args.dtype}, prompt {args.prompt_len}, "
        f"{args.new_tokens} new tokens, random weights, on {device}"
    )
    print(benchmarks.markdown_table(results, title))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {"title": title, "results": [dataclasses.asdict(r) for r in results]}
        args.json.write_text(json.dumps(payload, indent=2))
    return 0
