"""Test automation: one session per backend, the conformance suite, the mutation check, the HF
oracle, benchmarks, lint, the documentation site.

`nox -l` lists them. Each session gets its own virtualenv with only what it needs.
"""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "tests-functional", "tests-haiku", "tests-keras", "conformance"]
nox.options.reuse_existing_virtualenvs = True

BACKEND_TESTS = {"haiku": "tests/haiku", "keras": "tests/keras"}
PINNED = ("-c", "constraints.txt")
"""The tested versions of JAX, Keras, Haiku, optax, orbax and chex; `latest` leaves them out."""
UPGRADED = ("jax", "jaxlib", "keras", "dm-haiku", "orbax-checkpoint", "optax", "chex")
# The CPU build of PyTorch, pinned; a plain `torch` pulls CUDA wheels.
TORCH = "torch==2.13.0"


@nox.session
def lint(session: nox.Session) -> None:
    """ruff lint and format check."""
    session.install("ruff>=0.8")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def docs(session: nox.Session) -> None:
    """The documentation site into site/, failing on any warning: broken links, a page missing from
    the nav, a docstring mkdocstrings cannot read. The CLI reference imports `shared.cli`, and the
    API reference reads the code, so the package comes too (without its heavy extras)."""
    session.install(*PINNED, "-e", ".[docs]")
    session.run("mkdocs", "build", "--strict", *session.posargs)


@nox.session
def typecheck(session: nox.Session) -> None:
    """pyright (basic mode, settings in pyproject.toml) over the package and the three backends
    (pytest too: `gpt2 conformance` runs it)."""
    session.install(*PINNED, "-e", ".[all]", "pytest>=8", "pyright[nodejs]>=1.1.400")
    session.run("pyright", *session.posargs)


@nox.session
def latest(session: nox.Session) -> None:
    """The quick suite on the newest releases of the pinned dependencies, to see what the next
    bump of constraints.txt would break."""
    session.install("-e", ".[all]", "pytest>=8")
    session.install("--upgrade", *UPGRADED)
    session.run("pytest", "-m", "not slow", *session.posargs)


@nox.session(name="tests-functional")
def tests_functional(session: nox.Session) -> None:
    """The shared core (training included) and the functional backend; TensorFlow writes and reads
    the OpenAI fixtures. The core's own tests reach every backend (a checkpoint loaded into haiku,
    the benchmark of every backend, sharding rules per backend), so haiku and Keras come too."""
    session.install(*PINNED, "-e", ".[tf,train,wandb,haiku,keras]", "pytest>=8")
    ignores = [f"--ignore={path}" for path in BACKEND_TESTS.values()]
    session.run("pytest", "tests", *ignores, *session.posargs)


@nox.session(name="tests-haiku")
def tests_haiku(session: nox.Session) -> None:
    """The haiku backend's own tests, with only dm-haiku added to the core."""
    session.install(*PINNED, "-e", ".[haiku]", "pytest>=8")
    session.run("pytest", BACKEND_TESTS["haiku"], *session.posargs)


@nox.session(name="tests-keras")
def tests_keras(session: nox.Session) -> None:
    """The Keras backend's own tests, with Keras 3 and the training extra (for `--keras-fit`)
    added to the core."""
    session.install(*PINNED, "-e", ".[keras,train]", "pytest>=8")
    session.run("pytest", BACKEND_TESTS["keras"], *session.posargs)


@nox.session
def conformance(session: nox.Session) -> None:
    """The conformance suite over every backend; writes reports/conformance.{md,json}."""
    session.install(*PINNED, "-e", ".[all]", "pytest>=8")
    session.run("pytest", "conformance", "--conformance-report", "reports", *session.posargs)


@nox.session
def mutants(session: nox.Session) -> None:
    """The planted bugs of conformance/mutants.toml, each in a scratch copy of the checkout with
    the tests that should catch it; fails unless every one is caught. Writes
    reports/mutants.{md,json}; `nox -s mutants -- --only NAME` runs one, `-- --list` lists them."""
    session.install(*PINNED, "-e", ".[all]", "pytest>=8")
    session.run("python", "-m", "conformance.mutants", *session.posargs)


@nox.session
def oracle(session: nox.Session) -> None:
    """Every backend against HF transformers on PyTorch (CPU); adds its rows to the report."""
    session.install(*PINNED, "-e", ".[all]", "pytest>=8", TORCH, "transformers>=5")
    session.run(
        "pytest", "conformance/oracle", "--oracle", "--conformance-report", "reports",
        *session.posargs,
    )  # fmt: skip


@nox.session
def bench(session: nox.Session) -> None:
    """`gpt2 bench` at 124M on random weights, every backend (report in reports/bench.*), then the
    pytest-benchmark timings of conformance/bench."""
    session.install(*PINNED, "-e", ".[haiku,keras,train]", "pytest>=8", "pytest-benchmark>=4")
    session.run(
        "gpt2", "bench", "--backends", "functional,haiku,keras", "--json", "reports/bench.json",
        "--markdown", "reports/bench.md", "--plot", "reports/bench.png", *session.posargs,
    )  # fmt: skip
    session.run(
        "pytest", "conformance/bench", "--bench", "--benchmark-json", "reports/bench-pytest.json"
    )


@nox.session(name="bench-oracle")
@nox.parametrize("baseline", ["hf", "keras-hub"])
def bench_oracle(session: nox.Session, baseline: str) -> None:
    """Other libraries' GPT-2 timed beside ours, each in its own environment, one after the other."""
    extra = {"hf": [TORCH, "transformers>=5"], "keras-hub": ["keras-hub>=0.18"]}[baseline]
    session.install(*PINNED, "-e", ".[keras,train]", *extra)
    session.run(
        "python", "-m", "shared.benchmarks.baselines", baseline,
        "--json", f"reports/bench-{baseline}.json", "--markdown", f"reports/bench-{baseline}.md",
    )  # fmt: skip
