"""`gpt2 conformance`: run the conformance suite over every backend and write its report."""

from __future__ import annotations

import argparse
from pathlib import Path

from shared.errors import GPT2Error, check_writable

SUITE = Path(__file__).resolve().parents[2] / "conformance"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "conformance",
        help="check that every backend agrees with the reference; write the report",
        description="Run the conformance suite (a source checkout with pytest installed) and "
        "write reports/conformance.md and .json. Other arguments go to pytest, e.g. -k haiku.",
    )
    parser.add_argument("--report-dir", default="reports", help="where the report goes")
    parser.add_argument("--oracle", action="store_true", help="also compare with HF transformers")
    parser.set_defaults(run=run, passes_unknown_args=True)  # the rest goes to pytest


def run(args: argparse.Namespace) -> int:
    if not SUITE.is_dir():
        raise GPT2Error(
            f"The conformance suite is not at {SUITE}; run this command from a source checkout "
            "installed with `pip install -e '.[test]'`."
        )
    try:
        import pytest
    except ImportError:
        raise GPT2Error("gpt2 conformance needs pytest: pip install 'gpt2-jax[test]'.") from None
    check_writable("--report-dir", Path(args.report_dir), folder=True)
    options = ["--conformance-report", args.report_dir, *(["--oracle"] if args.oracle else [])]
    return int(pytest.main([str(SUITE), "-p", "no:cacheprovider", *options, *args.unknown_args]))
