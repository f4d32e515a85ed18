"""Text that is not UTF-8 is refused wherever it comes from, naming the input and the offset of
its first bad byte (`gpt2 score --file` and `gpt2 prepare` are in tests/test_cli.py and
tests/test_data.py)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from shared.config import GPT2Config
from shared.params import canonical_shapes, unflatten
from shared.weights import save_canonical
from tests.faults.conftest import refused, run_gpt2
from tests.support.paths import BPE_DIR

BAD = b"caf\xe9 au lait".decode("utf-8", "surrogateescape")
"""Latin-1 "café", as a shell passes it on: byte 3 cannot start a UTF-8 character."""


@pytest.mark.parametrize(
    ("args", "source"),
    [
        (["generate", f"--prompt={BAD}"], "--prompt"),
        (["generate", "--prompt=ok", f"--stop={BAD}"], "--stop"),
        (["score", f"--text={BAD}"], "--text"),
        (["score", "--text=ok", f"--context={BAD}"], "--context"),
    ],
)
def test_arguments_that_are_not_utf8_are_refused_at_once(base_env, args, source):
    refused(
        run_gpt2(base_env, *args),
        f"{source} is not UTF-8 text (invalid continuation byte at byte 3).",
    )


def test_a_config_file_that_is_not_utf8_is_refused(base_env, tmp_path):
    (tmp_path / "run.toml").write_bytes(b'out_dir = "caf\xe9"\n')
    result = run_gpt2(base_env, "train", f"--config={tmp_path / 'run.toml'}")
    refused(
        result,
        f"Config file {tmp_path / 'run.toml'} is not UTF-8 text (invalid continuation byte at byte 14).",
    )


def test_interactive_input_that_is_not_utf8_is_refused_with_its_offset(base_env, tmp_path):
    config = GPT2Config(n_embd=8, n_head=2, n_layer=1, n_vocab=50257, n_ctx=16)
    shapes = canonical_shapes(config)
    tree = unflatten({path: np.zeros(shape, np.float32) for path, shape in shapes.items()})
    weights = save_canonical(tree, config, tmp_path / "tiny.safetensors")
    (tmp_path / "models" / "124M").mkdir(parents=True)  # GPT-2's tokenizer, already downloaded
    for name in ("encoder.json", "vocab.bpe"):
        shutil.copy(BPE_DIR / name, tmp_path / "models" / "124M" / name)
    env = {**base_env, "GPT2_MODELS_DIR": str(tmp_path / "models")}
    stdin = b"\n" + b"caf\xe9 au lait\n"  # an empty line is skipped, then the bad one
    result = run_gpt2(env, "generate", "--interactive", f"--checkpoint={weights}", stdin=stdin)
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines()[-1] == (
        "gpt2 generate: error: stdin is not UTF-8 text (invalid continuation byte at byte 4)."
    )
