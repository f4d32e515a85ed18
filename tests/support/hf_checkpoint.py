"""Write Hugging Face GPT-2 files from OpenAI-named arrays, without `transformers`.

Names, layout and `config.json` are spelled out here, independently of `shared.weights`, so the
converter is checked against what `transformers` writes rather than against itself; the oracle
session (`conformance/oracle`) checks these against a real `save_pretrained`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.numpy

from shared.config import GPT2Config

HF_TO_OPENAI_BLOCK = {
    "ln_1.weight": "ln_1/g",
    "ln_1.bias": "ln_1/b",
    "attn.c_attn.weight": "attn/c_attn/w",
    "attn.c_attn.bias": "attn/c_attn/b",
    "attn.c_proj.weight": "attn/c_proj/w",
    "attn.c_proj.bias": "attn/c_proj/b",
    "ln_2.weight": "ln_2/g",
    "ln_2.bias": "ln_2/b",
    "mlp.c_fc.weight": "mlp/c_fc/w",
    "mlp.c_fc.bias": "mlp/c_fc/b",
    "mlp.c_proj.weight": "mlp/c_proj/w",
    "mlp.c_proj.bias": "mlp/c_proj/b",
}
"""HF name suffix under h.{i}. -> OpenAI name under model/h{i}/."""

BODY_PREFIX = "transformer."
"""`GPT2LMHeadModel.save_pretrained` names the body's tensors under this; `lm_head.weight`, tied
to `transformer.wte.weight`, is left out of the file."""


def hf_tensors_by_hand(
    openai_arrays: Mapping[str, np.ndarray], n_layer: int, prefix: str = ""
) -> dict[str, np.ndarray]:
    """HF's names for the OpenAI arrays: Conv1D weights lose the leading 1 and stay [in, out]."""
    tensors = {
        f"{prefix}wte.weight": openai_arrays["model/wte"],
        f"{prefix}wpe.weight": openai_arrays["model/wpe"],
        f"{prefix}ln_f.weight": openai_arrays["model/ln_f/g"],
        f"{prefix}ln_f.bias": openai_arrays["model/ln_f/b"],
    }
    for i in range(n_layer):
        for hf, openai in HF_TO_OPENAI_BLOCK.items():
            array = openai_arrays[f"model/h{i}/{openai}"]
            tensors[f"{prefix}h.{i}.{hf}"] = array[0] if array.ndim == 3 else array
    return tensors


def write_hf_config_by_hand(folder: Path, config: GPT2Config) -> None:
    """The fields of a Hugging Face GPT-2 `config.json` that describe the shapes."""
    hf = {
        "model_type": "gpt2",
        "activation_function": "gelu_new",
        "n_embd": config.n_embd,
        "n_head": config.n_head,
        "n_layer": config.n_layer,
        "vocab_size": config.n_vocab,
        "n_positions": config.n_ctx,
        "layer_norm_epsilon": config.ln_eps,
    }
    (folder / "config.json").write_text(json.dumps(hf))


def saved_config(config: GPT2Config) -> dict[str, Any]:
    """The `config.json` `GPT2LMHeadModel(GPT2Config(...)).save_pretrained` writes for `config`
    (transformers 5), every default included."""
    return {
        "activation_function": "gelu_new",
        "add_cross_attention": False,
        "architectures": ["GPT2LMHeadModel"],
        "attn_pdrop": 0.1,
        "bos_token_id": 50256,
        "dtype": "float32",
        "embd_pdrop": 0.1,
        "eos_token_id": 50256,
        "initializer_range": 0.02,
        "layer_norm_epsilon": config.ln_eps,
        "model_type": "gpt2",
        "n_embd": config.n_embd,
        "n_head": config.n_head,
        "n_inner": None,
        "n_layer": config.n_layer,
        "n_positions": config.n_ctx,
        "pad_token_id": None,
        "reorder_and_upcast_attn": False,
        "resid_pdrop": 0.1,
        "scale_attn_by_inverse_layer_idx": False,
        "scale_attn_weights": True,
        "summary_activation": None,
        "summary_first_dropout": 0.1,
        "summary_proj_to_labels": True,
        "summary_type": "cls_index",
        "summary_use_proj": True,
        "tie_word_embeddings": True,
        "transformers_version": "5.25.0",
        "use_cache": True,
        "vocab_size": config.n_vocab,
    }


def write_hf_checkpoint(
    folder: str | os.PathLike[str], openai_arrays: Mapping[str, np.ndarray], config: GPT2Config
) -> Path:
    """Write the OpenAI arrays as `GPT2LMHeadModel.save_pretrained` would: `model.safetensors`
    (`transformer.`-prefixed names, no `lm_head.weight`, the "pt" format tag) and `config.json`.
    Returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = hf_tensors_by_hand(openai_arrays, config.n_layer, prefix=BODY_PREFIX)
    safetensors.numpy.save_file(tensors, str(folder / "model.safetensors"), {"format": "pt"})
    (folder / "config.json").write_text(json.dumps(saved_config(config), indent=2) + "\n")
    return folder
