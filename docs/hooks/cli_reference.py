"""mkdocs hook: fill docs/cli.md with the real `--help` of `gpt2` and of each subcommand.

The page holds the marker `<!-- gpt2-cli-reference -->`; at build time it is replaced by one
section per command, each with the text argparse prints for `--help`, taken from
`shared.cli.build_parser()`. So the reference cannot drift from the parser.
tests/test_docs_examples.py calls `render()` directly to check that every subcommand is in it.
"""

from __future__ import annotations

import argparse
import functools
from typing import Any

MARKER = "<!-- gpt2-cli-reference -->"
WIDTH = 100
"""Columns of the rendered help, fixed so the page does not depend on the terminal's width."""


def commands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> list[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """(words after `gpt2`, parser) for `parser` and every subcommand below it, in parser order;
    an alias is listed once, under its first name."""
    found = [(path, parser)]
    seen: set[int] = set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                if id(sub) not in seen:
                    seen.add(id(sub))
                    found += commands(sub, (*path, name))
    return found


def help_text(parser: argparse.ArgumentParser) -> str:
    """`parser.format_help()` at WIDTH columns."""
    original = parser.formatter_class
    parser.formatter_class = functools.partial(original, width=WIDTH)
    try:
        return parser.format_help().rstrip()
    finally:
        parser.formatter_class = original


def render() -> str:
    """The markdown that replaces MARKER: a `## gpt2 ...` heading and a `text` fence per command."""
    from shared.cli import build_parser

    sections = []
    for words, parser in commands(build_parser()):
        title = " ".join(("gpt2", *words))
        sections.append(f"## `{title}`\n\n```text\n{help_text(parser)}\n```\n")
    return "\n".join(sections)


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    """mkdocs event: replace MARKER in any page that holds it."""
    return markdown.replace(MARKER, render()) if MARKER in markdown else markdown
