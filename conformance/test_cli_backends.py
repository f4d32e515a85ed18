"""`gpt2 generate --backend X` end to end: every backend prints the very same text."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conformance.conftest import compared_with_reference
from shared.config import GPT2Config
from tests.support.openai_checkpoint import write_openai_checkpoint
from tests.support.openai_server import OpenAIServer


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("storage")
    write_openai_checkpoint(root / "models" / "124M", GPT2Config(32, 4, 2, 50257, 128), seed=5)
    cache = tmp_path_factory.mktemp("cache")
    with OpenAIServer(root) as server:
        yield {
            **os.environ, "GPT2_BASE_URL": server.base_url, "JAX_PLATFORMS": "cpu",
            "GPT2_MODELS_DIR": str(cache / "models"), "JAX_COMPILATION_CACHE_DIR": str(cache / "xla"),
        }  # fmt: skip


def _generate(env, backend):
    args = [
        "--prompt",
        "The meaning of life is",
        "--max-new-tokens",
        "12",
        "--seed",
        "4",
        "--backend",
        backend,
    ]
    result = subprocess.run(
        [sys.executable, "-m", "gpt2", "generate", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@compared_with_reference
def test_every_backend_generates_the_same_text(env, backend):
    text = _generate(env, backend.name)
    assert text.startswith("The meaning of life is") and len(text) > len("The meaning of life is\n")
    assert text == _generate(env, "functional")
