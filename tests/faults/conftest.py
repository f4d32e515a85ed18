"""The fault suite's command line: `gpt2` as a subprocess, sharing one compilation cache."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable

import pytest

Gpt2 = Callable[..., subprocess.CompletedProcess]


@pytest.fixture(scope="package")
def base_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """CPU only, one compilation cache for the whole suite (a program compiles once)."""
    cache = tmp_path_factory.mktemp("xla")
    return {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_COMPILATION_CACHE_DIR": str(cache)}


def run_gpt2(
    env: dict[str, str],
    *args: str,
    module: str = "gpt2",
    stdin: bytes | None = None,
    python: tuple[str, ...] = (),
) -> subprocess.CompletedProcess:
    """`python [python] -m module args` (`gpt2`, or a test wrapper of it), output decoded
    leniently."""
    result = subprocess.run(
        [sys.executable, *python, "-m", module, *args], env=env, input=stdin,
        capture_output=True, timeout=300,
    )  # fmt: skip
    result.stdout = result.stdout.decode(errors="replace")
    result.stderr = result.stderr.decode(errors="replace")
    return result


PROGRESS_BAR = re.compile(r"\d+%\|")
"""A line tqdm drew (downloads show their progress on stderr)."""


def refused(result: subprocess.CompletedProcess, message: str) -> str:
    """The one error line of a command that failed with status 2 and `message` in it."""
    assert result.returncode == 2, result.stderr
    lines = [
        line
        for line in result.stderr.splitlines()
        if line.strip() and not PROGRESS_BAR.search(line)
    ]
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]
