"""Test automation: one session per backend, the conformance suite, benchmarks and lint.

`nox -l` lists them. Each session gets its own virtualenv with only what it needs.
"""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "tests-functional", "conformance"]
nox.options.reuse_existing_virtualenvs = True


@nox.session
def lint(session: nox.Session) -> None:
    """ruff lint and format check."""
    session.install("ruff>=0.8")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(name="tests-functional")
def tests_functional(session: nox.Session) -> None:
    """The shared core and the functional backend (TensorFlow only to write/read OpenAI fixtures)."""
    session.install("-e", ".[tf]", "pytest>=8")
    session.run("pytest", "tests", *session.posargs)


@nox.session
def conformance(session: nox.Session) -> None:
    """The conformance suite over every registered backend."""
    session.install("-e", ".[all]", "pytest>=8")
    session.run("pytest", "conformance", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """`gpt2 bench` at 124M with random weights: cached decode vs the recompute loop, TTFT."""
    session.install("-e", ".")
    session.run("gpt2", "bench", "--json", "reports/bench.json", *session.posargs)
