"""Keras' own distribution API lays GPT2LM out by the shared rules and trains it unchanged."""

from __future__ import annotations

import pytest
from jax.sharding import PartitionSpec as P

pytest.importorskip("keras")

CONFIG = {"n_vocab": 64, "n_ctx": 16, "n_embd": 16, "n_head": 2, "n_layer": 1}


@pytest.fixture(scope="module")
def keras_on_mesh(on_eight_devices) -> dict:
    return on_eight_devices("keras", config=CONFIG, mesh="data=2,fsdp=4").result()


def test_keras_model_parallel_lays_weights_out_by_the_shared_rules(keras_on_mesh):
    specs = keras_on_mesh["specs"]
    assert specs["wte/embeddings"] == str(P("fsdp", None))  # vocab 64 divides by 4
    assert specs["h0/mlp/c_fc/kernel"] == str(P(None, "fsdp"))
    assert specs["h0/ln_1/gamma"] == str(P("fsdp"))


def test_keras_on_a_mesh_computes_and_trains_like_one_device(keras_on_mesh):
    assert keras_on_mesh["logits"] <= 1e-6
    assert keras_on_mesh["loss"] <= 1e-5
    assert keras_on_mesh["weights"] <= 1e-6
