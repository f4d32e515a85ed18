"""Weights that are missing, empty or damaged: one sentence naming the file, status 2."""

from __future__ import annotations

import numpy as np
import pytest

from shared.config import GPT2Config
from shared.params import canonical_shapes, unflatten
from shared.weights import save_canonical, save_hf
from tests.faults.conftest import refused, run_gpt2

FORMATS = "expected an OpenAI folder (hparams.json + checkpoint), a Hugging Face folder"


def test_a_checkpoint_that_does_not_exist_is_named_as_missing(base_env, tmp_path):
    result = run_gpt2(base_env, "generate", "--prompt=x", f"--checkpoint={tmp_path}/nothing")
    refused(result, f"{tmp_path}/nothing does not exist, and it is not a GPT-2 size name (124M,")


@pytest.mark.parametrize("folder", ["run/checkpoints", "run/best", "empty"])
def test_a_folder_without_weights_names_the_formats_looked_for(base_env, tmp_path, folder):
    (tmp_path / folder).mkdir(parents=True)
    result = run_gpt2(base_env, "generate", "--prompt=x", f"--checkpoint={tmp_path / folder}")
    refused(result, FORMATS)


@pytest.mark.parametrize(
    ("save", "bad"),
    [(save_canonical, "blocks/mlp/c_fc/w"), (save_hf, "h.1.mlp.c_fc.weight")],
    ids=["canonical-file", "hf-folder"],
)
def test_weights_holding_nan_or_inf_are_refused_naming_the_tensor(base_env, tmp_path, save, bad):
    config = GPT2Config(n_embd=8, n_head=2, n_layer=2, n_vocab=16, n_ctx=8)
    rng = np.random.default_rng(0)
    flat = {
        path: rng.standard_normal(shape, np.float32)
        for path, shape in canonical_shapes(config).items()
    }
    flat["blocks/mlp/c_fc/w"][1, 3, 5] = np.inf
    written = save(unflatten(flat), config, tmp_path / "weights")
    line = refused(
        run_gpt2(base_env, "generate", "--prompt=x", f"--checkpoint={written}"),
        f"Tensor {bad!r} in {tmp_path / 'weights'}",
    )
    assert line.endswith("holds NaN or Inf values, so the weights are damaged; use an earlier "
                         "checkpoint, or convert or download them again.")  # fmt: skip
