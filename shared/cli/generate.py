"""`gpt2 generate`: stream a continuation of one or more prompts, or chat in an interactive loop."""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import sys
from typing import TYPE_CHECKING

from shared import text_input
from shared.cli.options import (
    add_checkpoint,
    add_model_options,
    check_model_source,
    load_model,
    unescape,
)

if TYPE_CHECKING:
    from shared.api import GPT2
    from shared.beam_search import BeamParams
    from shared.request import Request


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "generate", help="continue a prompt with GPT-2", description=__doc__
    )
    parser.add_argument(
        "--prompt", action="append", default=[], help="text to continue (repeat for a batch)"
    )
    parser.add_argument(
        "--max-new-tokens", "--n_tokens_to_generate", "--n-tokens-to-generate", type=int,
        default=50, dest="max_new_tokens", help="tokens to generate per sample (default 50)",
    )  # fmt: skip
    parser.add_argument("--temperature", type=float, default=1.0, help="0 = greedy; default 1.0")
    parser.add_argument(
        "--top-k", "--top_k", type=_top_k, default=40, dest="top_k",
        help="sample among the k most likely tokens (default 40, as OpenAI's scripts; 'none' = off)",
    )  # fmt: skip
    parser.add_argument(
        "--top-p", "--top_p", type=float, default=1.0, dest="top_p",
        help="nucleus sampling mass in (0, 1]; default 1.0 (off)",
    )  # fmt: skip
    parser.add_argument(
        "--repetition-penalty", "--repetition_penalty", type=float, default=1.0,
        dest="repetition_penalty",
        help="weigh down tokens already in the prompt or output (> 1 discourages repeats, as "
        "Hugging Face's repetition_penalty; 1.2 is common); default 1.0 (off)",
    )  # fmt: skip
    parser.add_argument(
        "--no-repeat-ngram-size", "--no_repeat_ngram_size", type=int, default=0,
        dest="no_repeat_ngram_size",
        help="never repeat an n-gram of this many tokens from the prompt or output (as Hugging "
        "Face's no_repeat_ngram_size); default 0 (off)",
    )  # fmt: skip
    parser.add_argument(
        "--num-beams", "--num_beams", type=int, default=1, dest="num_beams",
        help="beam search: keep this many hypotheses per prompt and print the most likely "
        "(deterministic; no sampling options); default 1 (off)",
    )  # fmt: skip
    parser.add_argument(
        "--length-penalty", "--length_penalty", type=float, default=1.0, dest="length_penalty",
        help="beam search: hypotheses score summed log-prob / length ** this (> 0 favours longer "
        "ones, < 0 shorter); default 1.0",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=None, help="seed for reproducible samples")
    parser.add_argument(
        "--stop", action="append", default=[],
        help=r"stop before this text (repeatable; \n and \t are understood)",
    )  # fmt: skip
    parser.add_argument(
        "--num-samples", "--num_samples", type=int, default=1, dest="num_samples",
        help="samples per prompt (with --num-beams: the best hypotheses per prompt, at most "
        "the beams)",
    )  # fmt: skip
    parser.add_argument(
        "--truncate",
        action="store_true",
        help="let prompt + new tokens exceed the context: the model sees the last tokens that fit",
    )
    parser.add_argument(
        "--interactive", action="store_true", help="read prompts in a loop (model loaded once)"
    )
    parser.add_argument(
        "--no-stream", action="store_true", help="print whole samples instead of streaming"
    )
    add_checkpoint(parser, "sample from")
    parser.add_argument(
        "--mesh", default=None, metavar="data=D,fsdp=F",
        help="generate on several devices: rows split over data, parameters over fsdp",
    )  # fmt: skip
    add_model_options(parser)
    parser.set_defaults(run=run)


def _top_k(text: str) -> int | None:
    if text.lower() in ("none", "off"):
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"top_k must be an integer >= 1 or 'none', got {text!r}"
        ) from None


def run(args: argparse.Namespace) -> int:
    if bool(args.prompt) == args.interactive:
        raise ValueError("Give either --prompt (repeatable) or --interactive, not both or neither.")
    args.prompt = [text_input.argument(prompt, "--prompt") for prompt in args.prompt]
    args.stop = [text_input.argument(stop, "--stop") for stop in args.stop]
    check_model_source(args)
    # The request the model will serve, checked before the (possibly long) download and load.
    from shared.request import Request
    from shared.sampling_params import SamplingParams

    request = Request(
        args.prompt, args.max_new_tokens,
        SamplingParams(
            args.temperature, args.top_k, args.top_p, args.repetition_penalty,
            args.no_repeat_ngram_size,
        ),
        [unescape(s) for s in args.stop], args.seed, args.num_samples, args.truncate,
    )  # fmt: skip
    if args.num_beams != 1:
        beam = _beam_params(args, request)
    elif args.length_penalty != 1.0:
        raise ValueError("--length-penalty scores beam search's hypotheses; add --num-beams.")
    else:
        beam = None

    model = load_model(args, mesh=args.mesh)
    if args.interactive:
        return _interactive(model, request, beam, args.no_stream)
    _print_samples(model, request, beam, args.no_stream)
    return 0


SAMPLING_ONLY = {"temperature": 1.0, "top_k": 40, "top_p": 1.0, "seed": None}


def _beam_params(args: argparse.Namespace, request: Request) -> BeamParams:
    """The beam search's settings from the command line, refusing the options that only
    sampling uses."""
    from shared.beam_search import BeamParams

    given = [name for name, default in SAMPLING_ONLY.items() if getattr(args, name) != default]
    if given:
        flags = ", ".join("--" + name.replace("_", "-") for name in given)
        raise ValueError(
            f"--num-beams searches for the most likely text, so it takes no {flags} (those "
            "choose among sampled tokens); drop them or --num-beams."
        )
    return BeamParams(
        args.num_beams, args.length_penalty, request.num_samples,
        request.sampling.repetition_penalty, request.sampling.no_repeat_ngram_size,
    )  # fmt: skip


def _interactive(model: GPT2, request: Request, beam: BeamParams | None, no_stream: bool) -> int:
    print(
        "Interactive mode: type a prompt, Enter to generate, Ctrl-C to stop an answer, Ctrl-D "
        "to quit.",
        file=sys.stderr,
    )
    seed, read = request.seed, 0  # bytes of stdin read so far, which name a bad byte's offset
    while True:
        sys.stdout.write("prompt> ")
        sys.stdout.flush()
        line = sys.stdin.buffer.readline()
        if not line:
            print(file=sys.stderr)
            return 0
        prompt = text_input.decode(line, "stdin", read).removesuffix("\n")
        read += len(line)
        if not prompt.strip():
            continue
        try:
            # The settings were checked once at start; only the prompt and seed are new.
            turn = dataclasses.replace(request, prompts=(prompt,), seed=seed)
            _print_samples(model, turn, beam, no_stream)
        except ValueError as error:  # a too-long prompt should not end the session
            print(f"error: {error}", file=sys.stderr)
        except KeyboardInterrupt:  # Ctrl-C stops this answer; Ctrl-D ends the session
            print("\n(stopped)", file=sys.stderr)
        seed = None if seed is None else seed + 1


def _print_samples(model: GPT2, request: Request, beam: BeamParams | None, no_stream: bool) -> None:
    per_prompt = request.num_samples
    rows = [p for p in request.prompts for _ in range(per_prompt)]
    if beam is not None:
        results = model.beam_search_request(request, beam)
        for i, (prompt, result) in enumerate(zip(rows, results, strict=True)):
            if len(rows) > 1:
                print(
                    f"=== beam {i % per_prompt + 1} of prompt {i // per_prompt + 1} "
                    f"(score {result.score:.4f}) ==="
                )
            print(prompt + result.text)
        return
    if len(rows) == 1 and not no_stream:
        stream = model.stream_request(request)
        first = next(stream)  # raises on a bad prompt before anything is printed
        sys.stdout.write(rows[0])
        for deltas in itertools.chain([first], stream):
            sys.stdout.write(deltas[0])
            sys.stdout.flush()
        sys.stdout.write("\n")
        return
    texts = model.generate_request(request)
    for i, (prompt, text) in enumerate(zip(rows, texts, strict=True)):
        if len(rows) > 1:
            print(f"=== sample {i % per_prompt + 1} of prompt {i // per_prompt + 1} ===")
        print(prompt + text)
