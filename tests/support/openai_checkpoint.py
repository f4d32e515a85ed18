"""Write a real OpenAI-format GPT-2 checkpoint (TF1 `Saver` files) with random weights.

The variable names and shapes are spelled out here, independently of `shared.weights`, so the
converter is checked against OpenAI's layout rather than against itself.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np

from shared.config import GPT2Config
from tests.support.paths import BPE_DIR


def openai_variable_shapes(config: GPT2Config) -> dict[str, tuple[int, ...]]:
    """Every variable of OpenAI's GPT-2 graph with its shape, in graph order."""
    d = config.n_embd
    shapes: dict[str, tuple[int, ...]] = {
        "model/wpe": (config.n_ctx, d),
        "model/wte": (config.n_vocab, d),
    }
    for i in range(config.n_layer):
        shapes |= {
            f"model/h{i}/ln_1/g": (d,),
            f"model/h{i}/ln_1/b": (d,),
            f"model/h{i}/attn/c_attn/w": (1, d, 3 * d),
            f"model/h{i}/attn/c_attn/b": (3 * d,),
            f"model/h{i}/attn/c_proj/w": (1, d, d),
            f"model/h{i}/attn/c_proj/b": (d,),
            f"model/h{i}/ln_2/g": (d,),
            f"model/h{i}/ln_2/b": (d,),
            f"model/h{i}/mlp/c_fc/w": (1, d, 4 * d),
            f"model/h{i}/mlp/c_fc/b": (4 * d,),
            f"model/h{i}/mlp/c_proj/w": (1, 4 * d, d),
            f"model/h{i}/mlp/c_proj/b": (d,),
        }
    shapes |= {"model/ln_f/g": (d,), "model/ln_f/b": (d,)}
    return shapes


def write_openai_checkpoint(
    folder: str | os.PathLike[str], config: GPT2Config, seed: int = 0
) -> dict[str, np.ndarray]:
    """Write the seven files OpenAI serves for one size into `folder`; return the arrays by name.

    The checkpoint is saved by `tf.compat.v1.train.Saver` from a graph-mode session, as OpenAI's
    were, so `checkpoint`, `model.ckpt.index`, `model.ckpt.data-00000-of-00001` and
    `model.ckpt.meta` are the real kinds of file.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    arrays = {
        name: rng.standard_normal(shape, dtype=np.float32)
        for name, shape in openai_variable_shapes(config).items()
    }
    graph = tf.Graph()
    with graph.as_default():
        assigns = []
        for name, value in arrays.items():
            variable = tf.compat.v1.get_variable(
                name, shape=value.shape, dtype=tf.float32, initializer=tf.zeros_initializer()
            )
            placeholder = tf.compat.v1.placeholder(tf.float32, value.shape)
            assigns.append((variable.assign(placeholder), placeholder, value))
        saver = tf.compat.v1.train.Saver(save_relative_paths=True)
        with tf.compat.v1.Session(graph=graph) as session:
            session.run(tf.compat.v1.global_variables_initializer())
            for assign, placeholder, value in assigns:
                session.run(assign, {placeholder: value})
            saver.save(session, str(folder / "model.ckpt"))
    (folder / "hparams.json").write_text(json.dumps(config.to_hparams(), indent=2))
    for name in ("encoder.json", "vocab.bpe"):
        shutil.copyfile(BPE_DIR / name, folder / name)
    return arrays
