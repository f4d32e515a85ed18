"""pytest-benchmark timings of every backend, built from the same code as `gpt2 bench`.

Collected only with `--bench` (`nox -s bench`): they take minutes and measure rather than check.
Each still asserts that what it timed did the work (tokens produced, a finite loss).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from shared import beam_search
from shared.backend import backend_names, get_backend
from shared.benchmarks import generation
from shared.benchmarks.baselines import CHAR_BATCH, CHAR_RECIPE
from shared.generation import Generator
from shared.training.config import TrainingConfig
from shared.training.optimizer import make_optimizer
from shared.training.step import make_train_step

PROMPT_LEN, NEW_TOKENS = 32, 256


@pytest.fixture(scope="module", params=backend_names())
def model_124m(request):
    return generation.random_model("124M", request.param)


@pytest.mark.parametrize("batch", [1, 8])
def test_decode_124m_greedy(benchmark, model_124m, batch):
    backend, params, config = model_124m
    generator = Generator(backend, params, config)
    prompts = generation.random_prompts(batch, PROMPT_LEN, config)
    completions = benchmark.pedantic(
        generator.generate, args=(prompts, NEW_TOKENS), rounds=3, warmup_rounds=1
    )
    assert [len(c.tokens) for c in completions] == [NEW_TOKENS] * batch
    benchmark.extra_info["tokens_per_s"] = batch * NEW_TOKENS / benchmark.stats["min"]


@pytest.mark.parametrize("search", ["4 beams", "greedy batch 4"])
def test_beam_search_124m_against_greedy_decoding_of_as_many_rows(benchmark, model_124m, search):
    """Four beams run four rows a step, and also reorder the cache and rank 4 x 50,257
    candidates; greedy decoding of four rows is the same work without those."""
    backend, params, config = model_124m
    generator = Generator(backend, params, config)
    prompts = generation.random_prompts(1, PROMPT_LEN, config)
    if search == "4 beams":
        run = functools.partial(beam_search.search, generator, prompts, NEW_TOKENS,
                                beam_search.BeamParams(4))  # fmt: skip
        [[best]] = benchmark.pedantic(run, rounds=3, warmup_rounds=1)
        steps = len(best.tokens)
    else:
        completions = benchmark.pedantic(
            generator.generate, args=(prompts * 4, NEW_TOKENS), rounds=3, warmup_rounds=1
        )
        steps = len(completions[0].tokens)
    assert steps == NEW_TOKENS
    benchmark.extra_info["steps_per_s"] = NEW_TOKENS / benchmark.stats["min"]


def test_prefill_124m_1024_tokens(benchmark, model_124m):
    backend, params, config = model_124m
    tokens = jnp.asarray(generation.random_prompts(1, config.n_ctx, config), jnp.int32)
    forward = jax.jit(lambda p, t: backend.apply(p, t, jnp.arange(t.shape[1])[None], None,
                                                 config=config)[0][:, -1])  # fmt: skip

    def run():
        return jax.block_until_ready(forward(params, tokens))

    last_logits = benchmark.pedantic(run, rounds=3, warmup_rounds=1)
    assert np.isfinite(np.asarray(last_logits)).all()
    benchmark.extra_info["tokens_per_s"] = config.n_ctx / benchmark.stats["min"]


@pytest.mark.parametrize("backend_name", backend_names())
def test_train_step_char_recipe(benchmark, backend_name):
    backend = get_backend(backend_name)
    optimizer = make_optimizer(TrainingConfig(block_size=CHAR_RECIPE.n_ctx))
    step = make_train_step(backend, CHAR_RECIPE, optimizer)
    state = {"params": backend.init(CHAR_RECIPE, jax.random.PRNGKey(0))}
    state["opt_state"] = optimizer.init(state["params"])
    batches = jnp.asarray(
        np.random.default_rng(0).integers(0, CHAR_RECIPE.n_vocab, (1, CHAR_BATCH, 65))
    )

    def run():
        state["params"], state["opt_state"], loss, _ = step(
            state["params"], state["opt_state"], batches, jnp.int32(0)
        )
        return float(loss)

    loss = benchmark.pedantic(run, rounds=20, warmup_rounds=2)
    assert np.isfinite(loss) and loss < np.log(CHAR_RECIPE.n_vocab)
    benchmark.extra_info["tokens_per_s"] = CHAR_BATCH * CHAR_RECIPE.n_ctx / benchmark.stats["min"]
