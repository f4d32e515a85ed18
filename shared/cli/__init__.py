"""`gpt2` command line: one subcommand per module, heavy imports deferred to the command that runs."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib import metadata

from shared.cli import bench, conformance, doctor, generate, plot, prepare, train, weights_commands
from shared.errors import GPT2Error

COMMANDS = (
    generate,
    prepare,
    train,
    plot,
    weights_commands.download,
    weights_commands.convert,
    doctor,
    bench,
    conformance,
)


def version_string() -> str:
    return f"gpt2-jax {metadata.version('gpt2-jax')} (jax {metadata.version('jax')})"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gpt2",
        description="GPT-2 in JAX: generate with, train, convert and benchmark OpenAI's models.",
    )
    parser.add_argument("--version", action="version", version=version_string())
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args) or 0
    except (GPT2Error, ValueError) as error:
        print(f"gpt2 {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
