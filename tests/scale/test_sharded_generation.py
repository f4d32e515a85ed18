"""Generation on a mesh: rows split over `data`, parameters over `fsdp`, the same tokens."""

from __future__ import annotations

import pytest

CONFIG = {"n_vocab": 96, "n_ctx": 64, "n_embd": 16, "n_head": 2, "n_layer": 2}
PROMPTS = [[5, 6, 7], [1, 2, 3, 4, 5, 6, 7, 8, 9], [42], [9, 8, 7, 6]]


@pytest.fixture(scope="module")
def generated(on_eight_devices) -> dict:
    return on_eight_devices(
        "generate", config=CONFIG, prompts=PROMPTS, mesh="data=2,fsdp=4", max_new_tokens=12
    ).result()


def test_sharded_greedy_generation_equals_unsharded(generated):
    assert generated["sharded"]["greedy"] == generated["unsharded"]["greedy"]
    assert all(len(tokens) == 12 for tokens in generated["sharded"]["greedy"])


def test_sharded_sampling_equals_unsharded_for_the_same_seed(generated):
    assert generated["sharded"]["sampled"] == generated["unsharded"]["sampled"]


def test_sharded_beam_search_finds_the_unsharded_hypotheses(generated):
    assert generated["sharded"]["beams"] == generated["unsharded"]["beams"]
    assert [len(row) for row in generated["sharded"]["beams"]] == [3] * len(PROMPTS)


def test_sharded_generation_splits_the_parameters_over_fsdp(generated):
    assert "P(None, 'fsdp')" in generated["sharded"]["param_specs"]


def test_the_python_api_and_gpt2_generate_take_a_mesh():
    """The mesh's path (flag -> api -> Generator) on this process' one device; the worker above
    checks the tokens on 2x4."""
    import jax

    from shared import api
    from shared.backend import get_backend
    from shared.cli import build_parser
    from shared.config import GPT2Config
    from shared.tokenizer import CharTokenizer

    args = build_parser().parse_args(["generate", "--mesh", "data=2,fsdp=4", "--prompt", "x"])
    assert args.mesh == "data=2,fsdp=4"
    config, backend = GPT2Config(**CONFIG), get_backend("functional")
    tree = backend.to_canonical(backend.init(config, jax.random.PRNGKey(0)), config)
    tokenizer = CharTokenizer([chr(32 + i) for i in range(CONFIG["n_vocab"])])
    on_mesh = api.from_canonical(tree, config, tokenizer, backend, mesh="data=1,fsdp=1")
    plain = api.from_canonical(tree, config, tokenizer, backend)
    assert on_mesh.generator.mesh is not None
    prompts = ["hello", "a longer prompt"]
    assert on_mesh.generate(prompts, 6, seed=1) == plain.generate(prompts, 6, seed=1)


def test_typed_prng_keys_are_placed_on_a_mesh():
    import jax

    from shared.backend import get_backend
    from shared.config import GPT2Config
    from shared.distributed.mesh import make_mesh
    from shared.generation import Generator
    from shared.sampling import SamplingParams

    config, backend = GPT2Config(**CONFIG), get_backend("functional")
    params = backend.init(config, jax.random.PRNGKey(0))
    keys, sampling = jax.random.split(jax.random.key(3), 2), SamplingParams(1.0)
    on_mesh = Generator(backend, params, config, mesh=make_mesh("data=1,fsdp=1"))
    plain = Generator(backend, params, config)
    assert on_mesh.generate(PROMPTS[:2], 5, sampling, keys=keys) == plain.generate(
        PROMPTS[:2], 5, sampling, keys=keys
    )
