"""`gpt2 bench`: generation, prefill and training speed on random weights, per backend, with the
machine's memory bandwidth and baselines measured in the same run."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from shared.errors import GPT2Error, check_writable

if TYPE_CHECKING:
    from shared.benchmarks.results import Result


def _names(text: str) -> tuple[str, ...]:
    return tuple(item for item in text.split(",") if item)


def comma_integers(text: str) -> tuple[int, ...]:
    """An argparse type: `1,8` -> (1, 8)."""
    try:
        return tuple(int(item) for item in _names(text))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers such as 1,8, got {text!r}"
        ) from None


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench", help="measure generation and training speed", description=__doc__
    )
    parser.add_argument(
        "--model-size", "--model_size", default="124M", help="124M, 355M, 774M or 1558M"
    )
    parser.add_argument(
        "--backend",
        "--backends",
        dest="backends",
        type=_names,
        default=("functional",),
        help="comma-separated backends, e.g. functional,haiku,keras",
    )
    parser.add_argument("--prompt-len", type=int, default=None, help="prompt tokens (32)")
    parser.add_argument("--new-tokens", type=int, default=None, help="tokens decoded (256)")
    parser.add_argument(
        "--batch-sizes",
        type=comma_integers,
        default=None,
        help="decode batches (CPU 1,8; GPU 1,8,64)",
    )
    parser.add_argument(
        "--prefill-len", type=int, default=None, help="prompt tokens of the prefill (1024)"
    )
    parser.add_argument(
        "--train-batch", type=int, default=None, help="training rows (CPU 4, GPU 32)"
    )
    parser.add_argument("--train-seq", type=int, default=None, help="CPU 256, GPU 1024")
    parser.add_argument(
        "--train-dtype", choices=["float32", "bfloat16"], default=None,
        help="training precision (CPU float32, GPU bfloat16)",
    )  # fmt: skip
    parser.add_argument(
        "--train-remat", action="store_true", help="train with --remat (activation checkpointing)"
    )
    parser.add_argument(
        "--models-dir",
        type=Path,
        default=None,
        help="also time whole `gpt2 generate` runs on the weights cached here",
    )
    parser.add_argument("--no-generation", action="store_true", help="skip generation")
    parser.add_argument("--no-baseline", action="store_true", help="skip the slow recompute loop")
    parser.add_argument(
        "--no-bf16",
        action="store_true",
        help="skip the bf16-weights decode (batch 1 and the largest batch)",
    )
    parser.add_argument(
        "--no-int8",
        action="store_true",
        help="skip the int8-weights rows (--dtype int8 of generate: weights bytes, decode at "
        "batch 1 and the largest batch, logit drift vs fp32), run for every --backend",
    )
    parser.add_argument("--no-train", action="store_true", help="skip the training step")
    parser.add_argument("--json", type=Path, default=None, help="write the results as JSON")
    parser.add_argument("--markdown", type=Path, default=None, help="write the markdown table")
    parser.add_argument("--plot", type=Path, default=None, help="write a PNG of decode tokens/s")
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        metavar="DIR",
        help="write jax.profiler traces of one warm decode per batch size and sampler and two "
        "warm training steps per backend into DIR (TensorBoard, or ui.perfetto.dev)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from shared.backend import get_backend
    from shared.benchmarks import results, suite
    from shared.config import resolve_model_size

    for name in args.backends:
        get_backend(name)  # fail on a bad name before minutes of measuring
    _check_outputs(args)
    settings = suite.default_settings(
        args.backends,
        size=resolve_model_size(args.model_size),
        prompt_len=args.prompt_len,
        new_tokens=args.new_tokens,
        batch_sizes=args.batch_sizes,
        prefill_len=args.prefill_len,
        train_batch=args.train_batch,
        train_seq=args.train_seq,
        train_dtype=args.train_dtype,
        train_remat=args.train_remat or None,
        models_dir=args.models_dir,
        generation=not args.no_generation,
        recompute_baseline=not args.no_baseline,
        bfloat16=not args.no_bf16,
        int8=not args.no_int8,
        train=not args.no_train,
        profile_dir=args.profile,
    )
    report = suite.run(settings, on_result=_progress)  # validates the settings first
    print(results.markdown(report))
    results.write(report, args.json, args.markdown)
    if args.plot:
        results.plot_decode_throughput(report, args.plot)
    return 0


def _check_outputs(args: argparse.Namespace) -> None:
    """Fail now, not after minutes of measuring, where a report could not be written."""
    if args.plot is not None and args.no_generation:
        raise GPT2Error("--plot draws decode throughput, which --no-generation skips; drop one.")
    for option in ("json", "markdown", "plot"):
        path = getattr(args, option)
        if path is not None:
            check_writable(f"--{option}", path)
    if args.profile is not None:
        check_writable("--profile", args.profile, folder=True)


def _progress(result: Result) -> None:
    import sys

    print(
        f"  {result.backend or '-'}: {result.name} = {result.value} {result.unit}", file=sys.stderr
    )
