"""The exported-program cache: one file per program and shape bucket, reused, rewritten if corrupt."""

from __future__ import annotations

import jax
import pytest

from functional_impl.backend import backend
from shared import generation, program_cache
from shared.config import GPT2Config
from shared.generation import Generator

CONFIG = GPT2Config(n_embd=32, n_head=4, n_layer=2, n_vocab=256, n_ctx=128)


@pytest.fixture(scope="module")
def generator():
    return Generator(backend, backend.init(CONFIG, jax.random.PRNGKey(0)), CONFIG)


@pytest.fixture
def folder(tmp_path):
    program_cache.enable(tmp_path)
    yield tmp_path
    program_cache.disable()


def names(folder):
    return sorted(f.name for f in folder.iterdir())


def test_each_shape_bucket_is_exported_once(generator, folder):
    generator.generate([[1, 2, 3]], 10)
    first = names(folder)
    generator.generate([[4, 5, 6, 7, 8]], 20)  # same prompt bucket (16) and cache bucket (64)
    assert names(folder) == first and len(first) == 2
    generator.generate([[1] * 20], 10)  # prompt bucket 32: a new prefill, a new cache length
    assert len(names(folder)) == 4


def test_a_corrupt_program_file_is_exported_again(generator, folder):
    expected = generator.generate([[1, 2, 3]], 10)
    for path in folder.iterdir():
        path.write_bytes(path.read_bytes()[:100])
    program_cache.enable(folder)
    assert generator.generate([[1, 2, 3]], 10) == expected
    assert all(path.stat().st_size > 1000 for path in folder.iterdir())


def test_a_program_damaged_inside_is_exported_again(generator, folder):
    expected = generator.generate([[1, 2, 3]], 10)
    for path in folder.iterdir():  # still deserializes, but its module no longer loads
        damaged = bytearray(path.read_bytes())
        damaged[5000] ^= 0xFF
        path.write_bytes(damaged)
    program_cache.enable(folder)
    assert generator.generate([[1, 2, 3]], 10) == expected


def test_a_changed_jax_setting_gets_its_own_program(generator, folder):
    generator.generate([[1, 2, 3]], 10)
    with jax.threefry_partitionable(not jax.config.jax_threefry_partitionable):
        generator.generate([[1, 2, 3]], 10)
    assert len(names(folder)) == 4


def test_file_names_change_with_the_static_arguments(generator, folder):
    generator.generate([[1, 2, 3]], 10)
    other = GPT2Config(n_embd=32, n_head=2, n_layer=2, n_vocab=256, n_ctx=128)  # same shapes
    Generator(backend, generator.params, other).generate([[1, 2, 3]], 10)
    assert len(names(folder)) == 4


def test_without_the_cache_a_bound_function_is_the_traced_one(generator):
    bound = program_cache.bind(generation._decode, (), {"config": CONFIG})
    assert bound.func is generation._decode and bound.keywords == {"config": CONFIG}
