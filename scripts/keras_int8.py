"""Keras' own `model.quantize("int8")` beside `--dtype int8` on the Keras backend: weights bytes,
greedy decode tokens/s at batch 1 and 8, and logit drift against float32, on GPT-2's random
initialisation (no download). The numbers of docs/benchmarks.md's int8 section.

`--dtype int8` is weight-only: Keras' int8 layers built with an `Int8QuantizationConfig` whose
activation quantizer is off. Keras' default `model.quantize("int8")` also rounds every Dense
layer's input to int8, per token (`AbsMaxQuantizer`), and quantises `wpe` too; it skips
subclasses of `Dense` unless given `type_check=False`, as here.

Usage: python scripts/keras_int8.py [--size 124M] [--new-tokens 64] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import warnings
from typing import Any

import jax
import numpy as np

from keras_impl import convert
from keras_impl.backend import KerasBackend, stateless_forward
from keras_impl.model import GPT2LM
from shared.backend import Forward
from shared.benchmarks import generation
from shared.config import GPT2Config, config_for_size
from shared.generation import Generator
from shared.params import init_params


class OneModel(KerasBackend):
    """The Keras backend running one given model (one that `model.quantize` changed)."""

    def __init__(self, model: GPT2LM) -> None:
        self.model = model

    def bind(self, keras_params: convert.KerasParams, config: GPT2Config) -> Forward:
        return stateless_forward(self.model, keras_params)


def models(size: str) -> dict[str, tuple[KerasBackend, Any, GPT2Config]]:
    """float32, `--dtype int8`, and Keras' default int8, all of the same random weights."""
    fp32 = generation.random_model(size, "keras")
    ours = generation.random_model(size, "keras", dtype="int8")
    config = fp32[2]
    tree = jax.jit(lambda key: init_params(config, key))(jax.random.PRNGKey(0))  # random_model's
    keras_default = GPT2LM.from_canonical(tree, config)
    with warnings.catch_warnings():  # "Layer LayerNorm does not have a `quantize` method"
        warnings.simplefilter("ignore")
        keras_default.quantize("int8", type_check=False)
    default = (OneModel(keras_default), convert.model_params(keras_default), config)
    return {"float32": fp32, "int8 (--dtype int8)": ours, 'int8 (model.quantize("int8"))': default}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", default="124M")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    config = config_for_size(args.size)
    tokens = np.asarray(generation.random_prompts(1, 32, config), np.int32)
    rows, reference = [], None
    for name, (backend, params, config) in models(args.size).items():
        logits = generation.full_forward_logits(backend, params, config, tokens)
        reference = logits if reference is None else reference
        generator = Generator(backend, params, config)
        speeds = {
            batch: generation.decode_tokens_per_s(generator, batch, 32, args.new_tokens)[0]
            for batch in (1, 8)
        }
        rows.append({
            "weights": name,
            "weights MB": generation.parameter_bytes(params) / 1e6,
            "decode b1 tokens/s": speeds[1],
            "decode b8 tokens/s": speeds[8],
            "logit drift": float(np.max(np.abs(logits - reference)) / np.max(np.abs(reference))),
            "argmax agrees": float(np.mean(logits.argmax(-1) == reference.argmax(-1))),
        })  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    if args.json:
        with open(args.json, "w") as file:
            json.dump(rows, file, indent=1)


if __name__ == "__main__":
    main()
