"""Hugging Face GPT-2 (`model.safetensors` + `config.json`) <-> the canonical tree.

HF's GPT-2 keeps OpenAI's Conv1D layout ([in, out]), so converting is renaming and (un)stacking
the blocks, never transposing: `h.{i}.attn.c_attn.weight` is row i of `blocks/attn/c_attn/w`.
Models trained here therefore load in `transformers.GPT2LMHeadModel.from_pretrained` and back.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.numpy

from shared.atomic import atomic_path
from shared.config import MODEL_SIZES, GPT2Config
from shared.errors import GPT2Error, writing
from shared.params import Params, canonical_shapes, flatten, unflatten, validate
from shared.sources import HF_WEIGHTS_NAME as WEIGHTS_NAME
from shared.weights._files import read_safetensors

CONFIG_NAME = "config.json"
PREFIX = "transformer."
"""`GPT2LMHeadModel` saves its body under this prefix; `GPT2Model` saves without it."""

GLOBAL_NAMES = {
    "wte": "wte.weight",
    "wpe": "wpe.weight",
    "ln_f/g": "ln_f.weight",
    "ln_f/b": "ln_f.bias",
}
BLOCK_NAMES = {
    "blocks/ln_1/g": "ln_1.weight",
    "blocks/ln_1/b": "ln_1.bias",
    "blocks/attn/c_attn/w": "attn.c_attn.weight",
    "blocks/attn/c_attn/b": "attn.c_attn.bias",
    "blocks/attn/c_proj/w": "attn.c_proj.weight",
    "blocks/attn/c_proj/b": "attn.c_proj.bias",
    "blocks/ln_2/g": "ln_2.weight",
    "blocks/ln_2/b": "ln_2.bias",
    "blocks/mlp/c_fc/w": "mlp.c_fc.weight",
    "blocks/mlp/c_fc/b": "mlp.c_fc.bias",
    "blocks/mlp/c_proj/w": "mlp.c_proj.weight",
    "blocks/mlp/c_proj/b": "mlp.c_proj.bias",
}
"""Canonical path -> HF name under `h.{i}.`."""

BUFFERS = ("attn.bias", "attn.masked_bias")
"""Per-block causal-mask buffers older `transformers` saved; they are not parameters."""
LM_HEAD = "lm_head.weight"
_BLOCK = re.compile(r"h\.(\d+)\.(.+)", re.ASCII)
_GELU_TANH = ("gelu_new", "gelu_pytorch_tanh")


def hf_name(path: str, layer: int | None = None) -> str:
    """The HF tensor name (no prefix) of a canonical path (of block `layer` for `blocks/...`)."""
    if path in GLOBAL_NAMES:
        return GLOBAL_NAMES[path]
    return f"h.{layer}.{BLOCK_NAMES[path]}"


_GPT2_ATTENTION = {"scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False}
"""HF options that change the attention's arithmetic -> GPT-2's value, the only one supported."""


def config_from_hf(hf: Mapping[str, Any]) -> GPT2Config:
    """A `GPT2Config` from HF's `config.json` dict (HF's defaults for absent keys)."""
    if hf.get("model_type", "gpt2") != "gpt2":
        raise GPT2Error(f"config.json describes a {hf['model_type']!r} model, not GPT-2.")
    activation = hf.get("activation_function", "gelu_new")
    if activation not in _GELU_TANH:
        raise GPT2Error(
            f"config.json uses activation {activation!r}; only GPT-2's tanh GELU ('gelu_new') "
            "is supported."
        )
    if hf.get("tie_word_embeddings", True) is False:
        raise GPT2Error(
            "config.json unties lm_head from wte; untied output heads are not supported."
        )
    for key, gpt2_value in _GPT2_ATTENTION.items():
        if hf.get(key, gpt2_value) != gpt2_value:
            raise GPT2Error(
                f"config.json sets {key} to {hf[key]!r}; only GPT-2's attention ({key} "
                f"{gpt2_value!r}) is supported."
            )
    n_inner = hf.get("n_inner")
    if n_inner is not None and n_inner != 4 * hf.get("n_embd", 768):
        raise GPT2Error(
            f"config.json sets n_inner to {n_inner!r}; only GPT-2's MLP width of 4 * n_embd "
            "(n_inner null) is supported."
        )
    try:
        return GPT2Config(
            n_embd=hf.get("n_embd", 768),
            n_head=hf.get("n_head", 12),
            n_layer=hf.get("n_layer", 12),
            n_vocab=hf.get("vocab_size", 50257),
            n_ctx=hf.get("n_positions", 1024),
            ln_eps=float(hf.get("layer_norm_epsilon", 1e-5)),
        )
    except (TypeError, ValueError) as err:
        raise GPT2Error(f"config.json does not describe a valid GPT-2: {err}") from None


def hf_config(config: GPT2Config) -> dict[str, Any]:
    """The `config.json` that `transformers.GPT2LMHeadModel.from_pretrained` reads for `config`."""
    return {
        "model_type": "gpt2",
        "architectures": ["GPT2LMHeadModel"],
        "activation_function": "gelu_new",
        "n_embd": config.n_embd,
        "n_head": config.n_head,
        "n_layer": config.n_layer,
        "n_positions": config.n_ctx,
        "n_ctx": config.n_ctx,
        "n_inner": None,
        "vocab_size": config.n_vocab,
        "layer_norm_epsilon": config.ln_eps,
        "initializer_range": 0.02,
        "bos_token_id": 50256,
        "eos_token_id": 50256,
        "tie_word_embeddings": True,
        "attn_pdrop": 0.1,
        "embd_pdrop": 0.1,
        "resid_pdrop": 0.1,
        "summary_first_dropout": 0.1,
    }


def infer_config(tensors: Mapping[str, np.ndarray], source: str = "the file") -> GPT2Config:
    """Guess the config from tensor shapes, for a `model.safetensors` without `config.json`.

    The head count is not in any shape, so it is taken from OpenAI's size with the same width.
    """
    names = _strip_prefix(tensors, source)
    for required in ("wte.weight", "wpe.weight"):
        if required not in names:
            raise GPT2Error(f"{source} has no tensor {required!r}; it is not a GPT-2 checkpoint.")
        if np.ndim(names[required]) != 2:
            raise GPT2Error(
                f"Tensor {required!r} in {source} has shape {np.shape(names[required])}, but GPT-2 "
                "needs a 2-D [rows, n_embd] embedding."
            )
    n_vocab, n_embd = np.shape(names["wte.weight"])
    n_ctx = np.shape(names["wpe.weight"])[0]
    layers = [int(m.group(1)) for name in names if (m := _BLOCK.fullmatch(name))]
    if not layers:
        raise GPT2Error(f"{source} has no h.<i> block tensors; it is not a GPT-2 checkpoint.")
    sizes = [c for c in MODEL_SIZES.values() if c.n_embd == n_embd]
    if not sizes:
        raise GPT2Error(
            f"{source} has width n_embd={n_embd}, which no OpenAI size uses, so its head count "
            f"is unknown; put HF's {CONFIG_NAME} beside it."
        )
    return GPT2Config(
        n_embd=int(n_embd),
        n_head=sizes[0].n_head,
        n_layer=max(layers) + 1,
        n_vocab=int(n_vocab),
        n_ctx=int(n_ctx),
    )


def hf_to_canonical(
    tensors: Mapping[str, np.ndarray], config: GPT2Config, source: str = "the file"
) -> Params:
    """HF tensors (with or without the `transformer.` prefix) -> canonical tree for `config`.

    `source` names the file in error messages.
    """
    names = _strip_prefix(tensors, source)
    shapes = canonical_shapes(config)
    by_hf_name: dict[str, tuple[str, int | None]] = {}
    for path in shapes:
        layers = range(config.n_layer) if path in BLOCK_NAMES else [None]
        for layer in layers:
            by_hf_name[hf_name(path, layer)] = (path, layer)
    blocks: dict[str, list[Any]] = {path: [None] * config.n_layer for path in BLOCK_NAMES}
    flat: dict[str, Any] = {}
    lm_head = names.pop(LM_HEAD, None)
    for name, array in names.items():
        block = _BLOCK.fullmatch(name)
        if block and block.group(2) in BUFFERS:
            continue
        if name not in by_hf_name:
            raise GPT2Error(
                f"{source} has unknown tensor {name!r}; a GPT-2 with {config.n_layer} layers has "
                "only wte, wpe, h.<i>.{ln_1,attn,ln_2,mlp}.* and ln_f tensors."
            )
        path, layer = by_hf_name[name]
        expected = shapes[path][1:] if layer is not None else shapes[path]
        if tuple(np.shape(array)) != expected:
            raise GPT2Error(
                f"Tensor {name!r} in {source} has shape {tuple(np.shape(array))}, but {config} "
                f"needs {expected}."
            )
        if layer is None:
            flat[path] = np.asarray(array)
        else:
            blocks[path][layer] = np.asarray(array)
    for name, (path, layer) in by_hf_name.items():
        if (flat.get(path) if layer is None else blocks[path][layer]) is None:
            raise GPT2Error(f"{source} has no tensor {name!r}, which {config} needs.")
    for path, layers in blocks.items():
        flat[path] = np.stack(layers)
    if lm_head is not None and not np.array_equal(lm_head, flat["wte"]):
        raise GPT2Error(
            f"{source} has an lm_head.weight that differs from wte.weight; untied output heads "
            "are not supported."
        )
    return unflatten(flat)


def canonical_to_hf(tree: Mapping[str, Any], config: GPT2Config) -> dict[str, np.ndarray]:
    """Canonical tree -> HF tensors (no prefix, contiguous), as `GPT2LMHeadModel` loads them."""
    try:
        validate(tree, config)
    except ValueError as err:
        raise GPT2Error(f"Cannot convert to Hugging Face format: {err}") from None
    tensors: dict[str, np.ndarray] = {}
    for path, leaf in flatten(tree).items():
        array = np.asarray(leaf)
        if path in GLOBAL_NAMES:
            tensors[hf_name(path)] = np.ascontiguousarray(array)
        else:
            for layer in range(config.n_layer):
                tensors[hf_name(path, layer)] = np.ascontiguousarray(array[layer])
    return tensors


def load_hf(path: str | os.PathLike[str]) -> tuple[Params, GPT2Config]:
    """Read a HF GPT-2: a folder with `model.safetensors` (+ `config.json`), or the file itself.

    Without `config.json` the config is inferred from the tensor shapes.
    """
    path = Path(path)
    weights = path / WEIGHTS_NAME if path.is_dir() else path
    config_file = weights.parent / CONFIG_NAME
    tensors, _ = read_safetensors(weights)
    if config_file.is_file():
        config = config_from_hf(_read_json_object(config_file))
    else:
        config = infer_config(tensors, str(weights))
    return hf_to_canonical(tensors, config, str(weights)), config


def _read_json_object(path: Path) -> dict[str, Any]:
    """The JSON object in `path`; HF's `config.json` is one, so anything else is a `GPT2Error`."""
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise GPT2Error(f"{path} is not valid JSON ({err}).") from None
    if not isinstance(data, dict):
        raise GPT2Error(
            f"{path} must hold a JSON object of settings (n_embd, n_layer, ...) as Hugging "
            f"Face's config.json does, not {json.dumps(data)[:40]}."
        )
    return data


def save_hf(tree: Mapping[str, Any], config: GPT2Config, out_dir: str | os.PathLike[str]) -> Path:
    """Write `model.safetensors` and `config.json` into `out_dir`; return it.

    Both are written in full beside their final names before either is renamed, so a failure
    leaves the folder's previous pair (if any) as it was, never new weights with an old config.
    """
    out_dir = Path(out_dir)
    tensors = canonical_to_hf(tree, config)
    weights_path, config_path = out_dir / WEIGHTS_NAME, out_dir / CONFIG_NAME
    with (
        writing(weights_path),
        atomic_path(weights_path) as weights_tmp,
        writing(config_path),
        atomic_path(config_path) as config_tmp,
    ):
        # transformers refuses safetensors files whose metadata lacks a framework tag.
        safetensors.numpy.save_file(tensors, str(weights_tmp), metadata={"format": "pt"})
        config_tmp.write_text(json.dumps(hf_config(config), indent=2) + "\n")
    return out_dir


def _strip_prefix(tensors: Mapping[str, np.ndarray], source: str) -> dict[str, np.ndarray]:
    names: dict[str, np.ndarray] = {}
    for name, array in tensors.items():
        short = name.removeprefix(PREFIX)
        if short in names:
            raise GPT2Error(f"{source} holds tensor {short!r} both with and without {PREFIX!r}.")
        names[short] = array
    return names
