"""Weights that are missing, empty or damaged: one sentence naming the file, status 2."""

from __future__ import annotations

import pytest

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


def test_resuming_an_out_dir_that_does_not_exist_says_so(base_env, tmp_path):
    result = run_gpt2(base_env, "train", "--init-from=resume", f"--out-dir={tmp_path}/out")
    refused(result, f"{tmp_path}/out does not exist, so it holds no training run to resume")
