"""`gpt2 plot`: loss and learning-rate curves of one or more training runs as a PNG."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "plot", help="draw the loss and lr curves of training runs as a PNG", description=__doc__
    )
    parser.add_argument(
        "run_dirs", nargs="+", metavar="OUT_DIR",
        help="the --out-dir of a `gpt2 train` run; several overlay, labelled by folder name",
    )  # fmt: skip
    parser.add_argument(
        "--output", "-o", default=None, help="the PNG to write (default: OUT_DIR/loss.png)"
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from shared.training.plot import plot_runs

    print(plot_runs(args.run_dirs, args.output))
    return 0
