"""A bad argument is refused before JAX, TensorFlow or orbax load: at once, not seconds later."""

from __future__ import annotations

import pytest

from tests.faults.conftest import refused, run_gpt2

HEAVY = {"jax", "tensorflow", "orbax"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["generate", "--prompt=x", "--top-p=5"], "top_p must be in (0, 1], got 5.0."),
        (
            ["generate", "--prompt=x", "--max-new-tokens=0"],
            "max_new_tokens must be an integer >= 1",
        ),
        (["generate", "--prompt=x", "--checkpoint=/nowhere"], "/nowhere does not exist, and it is"),
        (["score", "--text=x", "--stride=0"], "--stride must be at least 1, got 0."),
        (["train", "--max-iters=-5"], "max_iters must be at least 1, got -5."),
        (["train", "--init-from=resume", "--out-dir=/nowhere"], "/nowhere does not exist, so it"),
        (["download", "999M"], "Unknown model size '999M'; valid sizes are: 124M"),
        (["convert", "/nowhere", "out", "--to=hf"], "/nowhere does not exist, and it is"),
    ],
)
def test_a_bad_argument_is_refused_before_the_heavy_libraries_load(base_env, args, message):
    result, imported = with_imports(run_gpt2(base_env, *args, python=("-X", "importtime")))
    refused(result, message)
    assert not HEAVY & imported


def test_an_unknown_flag_is_refused_before_the_heavy_libraries_load(base_env):
    result, imported = with_imports(
        run_gpt2(base_env, "generate", "--bogus", python=("-X", "importtime"))
    )
    assert result.returncode == 2 and "unrecognized arguments: --bogus" in result.stderr
    assert not HEAVY & imported


def with_imports(result):
    """`python -X importtime`'s result without its report on stderr, and the modules it names."""
    lines = result.stderr.splitlines()
    report = [line for line in lines if line.startswith("import time:")]
    result.stderr = "\n".join(line for line in lines if line not in report)
    return result, {line.rsplit("|", 1)[-1].strip() for line in report}
