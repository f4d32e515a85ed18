"""The Pallas decode-attention kernel (`shared.decode_attention`, run in interpret mode off GPU):
the values `attend` gives for one new token per sequence, and, switched on, the same greedy tokens
from every backend."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from shared import decode_attention, program_cache
from shared.attention import (
    attend,
    attention_mask,
    pallas_decode_attention,
    pallas_decode_attention_enabled,
)
from shared.backend import backend_names, get_backend
from shared.generation import Generator
from shared.kv_cache import KVCache
from tests.support.converters import CONFIG

FLOAT32_TOLERANCE = 1e-6
"""Largest |kernel - attend| over the largest |attend|, fp32: the two sum in other orders."""
BFLOAT16_TOLERANCE = 2**-7
"""The same in bf16: `attend` rounds its probabilities to bf16 before weighting the values, the
kernel keeps them in fp32; both round the output to bf16."""

# name: (slots, the query's slot, left-padding slots per sequence)
CASES = {
    "left-padded-batch": (128, 100, (0, 5, 70)),
    "partly-filled-cache": (128, 10, (0, 3, 0)),
    "every-slot-filled": (128, 127, (0, 1, 2)),
    "cache-shorter-than-a-block": (40, 39, (0, 7, 20)),
    "last-block-partial": (100, 99, (0, 66, 4)),
}
N_HEAD, HEAD_DIM = 4, 16
kernel = jax.jit(decode_attention.decode_attention)


def decode_case(name: str, dtype: jnp.dtype = jnp.float32) -> tuple:
    """(q, k, v, the step's mask, the query's slot) of one decode step: random keys and values
    in every slot, padding and unwritten ones included, so only the mask keeps them out."""
    slots, index, pads = CASES[name]
    batch = len(pads)
    keys = jax.random.split(jax.random.PRNGKey(slots + index), 3)
    q = jax.random.normal(keys[0], (batch, 1, N_HEAD, HEAD_DIM), dtype)
    k, v = (jax.random.normal(key, (batch * N_HEAD, slots, HEAD_DIM), dtype) for key in keys[1:])
    real = jnp.arange(slots)[None, :] >= jnp.asarray(pads)[:, None]
    mask = attention_mask(KVCache((), (), real, jnp.int32(index)), 1)
    return q, k, v, mask, index


def relative_difference(got: jax.Array, expected: jax.Array) -> float:
    """max |got - expected| / max |expected|, in fp32."""
    difference = np.asarray(got, np.float32) - np.asarray(expected, np.float32)
    return float(np.max(np.abs(difference)) / np.max(np.abs(np.asarray(expected, np.float32))))


@pytest.mark.parametrize("name", list(CASES))
def test_the_kernel_equals_attend_in_float32(name):
    q, k, v, mask, index = decode_case(name)
    got = kernel(q, k, v, mask, filled=index + 1)
    expected, _ = attend(q, k, v, mask)
    assert got.shape == expected.shape and got.dtype == expected.dtype
    assert relative_difference(got, expected) <= FLOAT32_TOLERANCE


@pytest.mark.parametrize("name", list(CASES))
def test_the_kernel_equals_attend_in_bfloat16_within_its_rounding(name):
    q, k, v, mask, index = decode_case(name, jnp.bfloat16)
    got = kernel(q, k, v, mask, filled=index + 1)
    expected, _ = attend(q, k, v, mask)
    assert got.dtype == jnp.bfloat16
    assert relative_difference(got, expected) <= BFLOAT16_TOLERANCE


def test_without_a_filled_count_every_slot_is_read_to_the_same_values():
    q, k, v, mask, index = decode_case("partly-filled-cache")
    everything = kernel(q, k, v, mask)
    filled_only = kernel(q, k, v, mask, filled=index + 1)
    assert relative_difference(everything, filled_only) <= FLOAT32_TOLERANCE


def test_attending_one_padding_slot_would_be_caught():
    """The comparison above fails for a kernel that sees one padding slot of one sequence."""
    q, k, v, mask, index = decode_case("left-padded-batch")
    got = kernel(q, k, v, mask, filled=index + 1)
    one_padding_slot_seen = mask.at[2, 0, 0, 69].set(True)
    wrong, _ = attend(q, k, v, one_padding_slot_seen)
    assert relative_difference(got, wrong) > 1000 * FLOAT32_TOLERANCE


def test_the_kernel_lowers_for_pallas_triton_backend_at_124m_shapes(monkeypatch):
    """What a CUDA host compiles, lowered here: power-of-two blocks, a 320-slot bucket, bf16."""
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    batch, n_head, head_dim, slots = 64, 12, 64, 320
    q = jnp.zeros((batch, 1, n_head, head_dim), jnp.bfloat16)
    k = v = jnp.zeros((batch * n_head, slots, head_dim), jnp.bfloat16)
    mask = jnp.ones((batch, 1, 1, slots), bool)
    traced = jax.jit(decode_attention.decode_attention).trace(q, k, v, mask, 100)
    assert "__gpu$xla.gpu.triton" in traced.lower(lowering_platforms=("cuda",)).as_text()


def test_the_switch_is_off_by_default_and_on_only_inside_its_block():
    assert not pallas_decode_attention_enabled()
    with pallas_decode_attention():
        assert pallas_decode_attention_enabled()
        with pallas_decode_attention(enabled=False):
            assert not pallas_decode_attention_enabled()
    assert not pallas_decode_attention_enabled()


def test_programs_under_the_switch_are_traced_not_taken_from_the_program_cache(tmp_path):
    program_cache.enable(tmp_path)
    try:
        with pallas_decode_attention():
            program_cache.call(jax.jit(jnp.negative), (jnp.ones(2),), {})
    finally:
        program_cache.disable()
    assert not list(tmp_path.iterdir())


@pytest.fixture(scope="module")
def uneven(canonical) -> dict:
    """`canonical` with 20 times GPT-2's initial query and key weights: uneven attention, so the
    greedy tokens vary and a wrong attention shows in them (GPT-2's init repeats one token)."""
    blocks = canonical["blocks"]
    c_attn = {**blocks["attn"]["c_attn"], "w": blocks["attn"]["c_attn"]["w"] * 20}
    return {**canonical, "blocks": {**blocks, "attn": {**blocks["attn"], "c_attn": c_attn}}}


@pytest.mark.parametrize("backend_name", backend_names())
def test_greedy_generation_with_the_kernel_gives_the_same_tokens(backend_name, uneven, monkeypatch):
    """A left-padded batch; the program without the kernel is compiled first, so the switched one
    must be traced afresh, not taken from jit's cache."""
    backend = get_backend(backend_name)
    generator = Generator(backend, backend.from_canonical(uneven, CONFIG), CONFIG)
    prompts = [[5, 6, 7], [11, 12, 13, 14, 15, 16, 17, 18, 19], [42]]
    expected = generator.generate(prompts, 12)
    assert len(set(expected[0].tokens)) > 3
    traced, unwrapped = [], decode_attention.decode_attention

    def counted(*args, **kwargs):
        traced.append(args[0].shape)
        return unwrapped(*args, **kwargs)

    monkeypatch.setattr(decode_attention, "decode_attention", counted)
    with pallas_decode_attention():
        got = generator.generate(prompts, 12)
    assert traced, "the decode step did not attend through the kernel"
    assert [c.tokens for c in got] == [c.tokens for c in expected]
