"""`gpt2` command line: one subcommand per module, heavy imports deferred to the command that runs."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from shared.cli import (
    bench,
    conformance,
    doctor,
    generate,
    logs,
    plot,
    prepare,
    score,
    train,
    weights_commands,
)
from shared.errors import GPT2Error
from shared.versions import installed_version

COMMANDS = (
    generate,
    score,
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
    """The versions `gpt2 --version` prints; a source tree on PYTHONPATH has no package metadata."""
    ours = installed_version("gpt2-jax") or "(source checkout, not installed)"
    return f"gpt2-jax {ours} (jax {installed_version('jax')})"


EXTRAS = {
    "tensorflow": "tf", "haiku": "haiku", "keras": "keras", "optax": "train", "orbax": "train",
    "chex": "train", "tensorboardX": "train", "matplotlib": "train", "wandb": "wandb",
}  # fmt: skip
"""An optional package's import name -> the extra of pyproject.toml that installs it."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gpt2",
        description="GPT-2 in JAX: generate with, train, convert and benchmark OpenAI's models.",
    )
    parser.add_argument("--version", action="version", version=version_string())
    verbosity = parser.add_mutually_exclusive_group()
    verbosity.add_argument(
        "-v", "--verbose", action="store_true", help="also show the library's debug messages"
    )
    verbosity.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="show only warnings and errors (no training progress lines)",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown and not getattr(args, "passes_unknown_args", False):
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    args.unknown_args = [arg for arg in unknown if arg != "--"]
    logs.configure(logs.level_for(args.verbose, args.quiet))
    try:
        return args.run(args) or 0
    except (GPT2Error, ValueError) as error:
        print(f"gpt2 {args.command}: error: {error}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as error:
        package = (error.name or "").split(".")[0]
        if package not in EXTRAS:
            raise
        print(
            f"gpt2 {args.command}: error: this needs {package}, which is not installed: "
            f"pip install 'gpt2-jax[{EXTRAS[package]}]'.",
            file=sys.stderr,
        )
        return 2
    except ImportError as error:  # a refusal worded for users (Keras on another backend)
        print(f"gpt2 {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`gpt2 doctor | head -1`): not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as error:  # a path the system refused (missing, read-only, not a folder)
        print(f"gpt2 {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
