"""Decoding: the KV cache equals the full forward pass, batching changes nothing, and every backend
generates the very same token ids as the reference for the same seed."""

from __future__ import annotations

import itertools
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conformance.conftest import TINY, canonical_tree, compared_with_reference
from conformance.report import max_abs_diff
from conformance.test_logits import LOGITS_TOLERANCE, forward
from shared import program_cache
from shared.beam_search import BeamParams, search
from shared.generation import GREEDY, Generator, _Controls, _decode, _prefill, row_keys
from shared.sampling import SamplingParams
from tests.support.ngrams import hf_ngram_bans

PROMPTS = [[5, 6, 7], [11, 12, 13, 14, 15, 16, 17, 18, 19], [42]]
SAMPLERS = {
    "greedy": SamplingParams(0.0),
    "temperature": SamplingParams(1.3),
    "top-k": SamplingParams(1.0, top_k=20),
    "top-p": SamplingParams(0.8, top_p=0.9),
    "top-k+top-p": SamplingParams(1.1, top_k=50, top_p=0.95),
    "top-p+repetition-penalty": SamplingParams(0.9, top_p=0.9, repetition_penalty=1.3),
    "top-k+no-repeat-bigrams": SamplingParams(1.0, top_k=20, no_repeat_ngram_size=2),
}


def test_kv_cache_decode_equals_full_forward_at_every_step(
    backend, reference, config, config_name, canonical, report
):
    backend_params = backend.from_canonical(canonical, config)
    tokens = jax.random.randint(jax.random.PRNGKey(1), (2, 12), 0, config.n_vocab)
    positions = jnp.broadcast_to(jnp.arange(12), tokens.shape)
    apply = jax.jit(backend.apply, static_argnames="config")
    cache = backend.init_cache(config, 2, 16, jnp.float32)
    logits, cache = apply(backend_params, tokens[:, :6], positions[:, :6], cache, config=config)
    steps = [logits]
    for t in range(6, 12):
        logits, cache = apply(
            backend_params, tokens[:, t : t + 1], positions[:, t : t + 1], cache, config=config
        )
        steps.append(logits)
    cached = jnp.concatenate(steps, axis=1)
    assert int(cache.index) == 12
    own = max_abs_diff(cached, forward(backend, canonical, config, tokens))
    report.check(
        "KV-cache decode vs own full forward", backend.name, config_name, own, LOGITS_TOLERANCE
    )
    if backend.name != reference.name:  # for the reference, the same check as the one above
        ref = max_abs_diff(cached, forward(reference, canonical, config, tokens))
        report.check(
            "KV-cache decode vs functional full forward",
            backend.name,
            config_name,
            ref,
            LOGITS_TOLERANCE,
        )


@compared_with_reference
@pytest.mark.parametrize("sampler", list(SAMPLERS))
def test_generation_gives_the_reference_token_ids(backend, reference, tiny_params, sampler, report):
    """A left-padded batch of different-length prompts, a stop token, one seed: identical ids."""
    tree = canonical_tree(TINY)
    expected = Generator(reference, reference.from_canonical(tree, TINY), TINY).generate(
        PROMPTS, 16, SAMPLERS[sampler], seed=11
    )
    stop = expected[1].tokens[5]
    expected = Generator(reference, reference.from_canonical(tree, TINY), TINY).generate(
        PROMPTS, 16, SAMPLERS[sampler], seed=11, stop_tokens={stop}
    )
    got = Generator(backend, tiny_params, TINY).generate(
        PROMPTS, 16, SAMPLERS[sampler], seed=11, stop_tokens={stop}
    )
    assert expected[1].finish_reason == "stop"
    differing = sum(
        (a != b)
        for e, g in zip(expected, got, strict=True)
        for a, b in zip(e.tokens, g.tokens, strict=False)
    ) + sum(abs(len(e.tokens) - len(g.tokens)) for e, g in zip(expected, got, strict=True))
    report.check(f"generated ids vs functional ({sampler})", backend.name, "tiny", differing, 0)


@compared_with_reference
@pytest.mark.parametrize(
    "settings", [{}, {"length_penalty": 0.5, "repetition_penalty": 1.3}], ids=["plain", "penalties"]
)
def test_beam_search_finds_the_reference_hypotheses(backend, reference, settings, report):
    """Four beams over the left-padded batch, with stop tokens some of them reach. Token
    embeddings 12 times their initial scale sharpen the random model's next-token distributions
    (nearly flat otherwise), so that hypotheses that stop can win."""
    beams = BeamParams(4, num_return=4, **settings)
    tree = canonical_tree(TINY)
    tree = {**tree, "wte": tree["wte"] * 12}
    expected_generator = Generator(reference, reference.from_canonical(tree, TINY), TINY)
    stops = {h.tokens[3] for row in search(expected_generator, PROMPTS, 12, beams) for h in row}
    expected = search(expected_generator, PROMPTS, 12, beams, stop_tokens=stops)
    generator = Generator(backend, backend.from_canonical(tree, TINY), TINY)
    got = search(generator, PROMPTS, 12, beams, stop_tokens=stops)
    pairs = [(e, g) for e_row, g_row in zip(expected, got, strict=True)
             for e, g in zip(e_row, g_row, strict=True)]  # fmt: skip
    assert any(e.finish_reason == "stop" for e, _ in pairs)
    differing = sum((e.tokens, e.stop_token) != (g.tokens, g.stop_token) for e, g in pairs)
    named = "(4 beams" + "".join(f", {name} {value}" for name, value in settings.items()) + ")"
    report.check(f"beam search ids vs functional {named}", backend.name, "tiny", differing, 0)
    score_diff = max(abs(e.score - g.score) for e, g in pairs)
    report.check(f"beam search scores vs functional {named}", backend.name, "tiny", score_diff,
                 1e-5)  # fmt: skip


@pytest.mark.parametrize(
    "sampler",
    ["greedy", "top-k", "top-p", "top-p+repetition-penalty", "top-k+no-repeat-bigrams"],
)
def test_left_padded_batch_rows_equal_prompts_generated_alone(backend, tiny_params, sampler):
    generator = Generator(backend, tiny_params, TINY)
    keys = row_keys(7, len(PROMPTS))
    batched = generator.generate(PROMPTS, 12, SAMPLERS[sampler], keys=keys)
    for row, prompt in enumerate(PROMPTS):
        alone = generator.generate([prompt], 12, SAMPLERS[sampler], keys=keys[row : row + 1])
        assert alone[0].tokens == batched[row].tokens


def cache_free_greedy(backend, params, prompt, steps, adjust=lambda sequence, last: last):
    """Greedy tokens from one full forward per step (no cache): each the argmax of the last
    position's logits after `adjust(sequence so far, logits)` (numpy) has applied a rule to them."""
    sequence = list(prompt)
    for _ in range(steps):
        tokens = jnp.asarray([sequence])
        logits, _ = backend.apply(
            params, tokens, jnp.arange(len(sequence))[None], None, config=TINY
        )
        sequence.append(int(np.argmax(adjust(sequence, np.array(logits[0, -1])))))
    return sequence[len(prompt) :]


def test_greedy_generation_follows_the_full_forward_argmax(backend):
    """Position embeddings ten times their initial scale make each step's argmax depend on its
    position (the random model otherwise repeats one token wherever it stands), so a decode
    loop that feeds a wrong position id is caught."""
    tree = canonical_tree(TINY)
    params = backend.from_canonical({**tree, "wpe": tree["wpe"] * 10}, TINY)
    [completion] = Generator(backend, params, TINY).generate([PROMPTS[1]], 6)
    expected = cache_free_greedy(backend, params, PROMPTS[1], 6)
    assert len(set(expected)) > 1
    assert completion.tokens == expected


def test_a_repetition_penalty_follows_the_penalized_full_forward_argmax(backend, tiny_params):
    """Greedy with Hugging Face's repetition penalty: the logits of the prompt's and the output's
    tokens weighed down (CTRL's rule) before each argmax."""
    penalty, steps = 1.3, 8

    def penalize(sequence, last):
        seen = sorted(set(sequence))
        last[seen] = np.where(last[seen] > 0, last[seen] / penalty, last[seen] * penalty)
        return last

    generator = Generator(backend, tiny_params, TINY)
    sampling = SamplingParams(0.0, repetition_penalty=penalty)
    completions = generator.generate(PROMPTS, steps, sampling)
    for prompt, completion in zip(PROMPTS, completions, strict=True):
        assert completion.tokens == cache_free_greedy(backend, tiny_params, prompt, steps, penalize)
    assert completions != generator.generate(PROMPTS, steps)  # the penalty changed the output


def test_no_repeat_ngram_follows_the_full_forward_argmax_with_repeats_banned(backend, tiny_params):
    """Greedy with Hugging Face's `no_repeat_ngram_size`: the tokens that would repeat a bigram
    banned before each argmax."""
    n, steps = 2, 10

    def ban(sequence, last):
        last[sorted(hf_ngram_bans(sequence, n))] = -np.inf
        return last

    generator = Generator(backend, tiny_params, TINY)
    completions = generator.generate(PROMPTS, steps, SamplingParams(0.0, no_repeat_ngram_size=n))
    for prompt, completion in zip(PROMPTS, completions, strict=True):
        assert completion.tokens == cache_free_greedy(backend, tiny_params, prompt, steps, ban)
        bigrams = list(itertools.pairwise([*prompt, *completion.tokens]))
        assert len(bigrams) == len(set(bigrams))
    assert completions != generator.generate(PROMPTS, steps)  # the bans changed the output


def test_stop_token_ends_only_its_own_row(backend, tiny_params):
    generator = Generator(backend, tiny_params, TINY)
    free = generator.generate(PROMPTS, 10)
    stop = free[0].tokens[3]
    stopped = generator.generate(PROMPTS, 10, stop_tokens={stop})
    first = free[0].tokens.index(stop)
    assert stopped[0].tokens == free[0].tokens[:first]
    assert stopped[0].finish_reason == "stop"
    for row in (1, 2):
        if stop not in free[row].tokens:
            assert stopped[row].tokens == free[row].tokens
            assert stopped[row].finish_reason == "length"


def test_streaming_in_chunks_yields_the_same_tokens(backend, tiny_params):
    generator = Generator(backend, tiny_params, TINY)
    whole = generator.generate(PROMPTS, 11, SamplingParams(1.0), seed=3)
    rows = [[] for _ in PROMPTS]
    for new, _ in generator.stream(PROMPTS, 11, SamplingParams(1.0), seed=3, chunk=4):
        for row, ids in zip(rows, new, strict=True):
            row.extend(ids)
    assert rows == [c.tokens for c in whole]


@pytest.fixture
def program_folder(tmp_path):
    """The exported-program cache on, in a fresh folder, for one test."""
    program_cache.enable(tmp_path / "programs")
    yield tmp_path / "programs"
    program_cache.disable()


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("path", ["traced", "exported"])
def test_the_compiled_decode_loop_never_copies_or_transposes_a_cache_layer(
    backend, tiny_params, batch, path, tmp_path
):
    """A decode step reads each layer's cache once; a whole-layer copy or transpose in the loop
    doubles that traffic or more. XLA on CPU inserted both for earlier cache layouts (see
    `shared.kv_cache.KVCache`): transposes at every batch size, copies at batch 1. The program
    read back from `shared.program_cache` (a warm `gpt2 generate`) must compile the same way."""
    prompts, mask = np.ones((batch, 16), np.int32), np.ones((batch, 16), bool)
    controls = _Controls(*GREEDY.as_arrays(), np.float32(1), np.zeros(TINY.n_vocab, bool),
                         np.int32(32))  # fmt: skip
    static = {"backend": backend, "config": TINY, "no_repeat_ngram": 0}
    state = _prefill(
        tiny_params, prompts, mask, None, np.int32(0), controls, max_slots=64, **static
    )
    args = (tiny_params, state, np.int32(32), controls)
    if path == "exported":
        program_cache.enable(tmp_path)
        decode = program_cache.bind(_decode, args, static, donate_argnums=(1,))
        program_cache.disable()
        assert [f.name.split("-")[0] for f in tmp_path.iterdir()] == ["_decode"]
        hlo = decode.lower(*args).compile().as_text()
    else:
        hlo = _decode.lower(*args, **static).compile().as_text()
    layer_elements = state.cache.k[0].size
    moved = re.findall(r"= \w+\[([\d,]*)\]\S* (?:copy|transpose)\(", hlo)
    moved_layers = [
        dims for dims in moved if math.prod(int(d) for d in dims.split(",") if d) == layer_elements
    ]
    assert moved_layers == [], f"the decode loop moves whole cache layers: {moved_layers}"


def test_programs_read_back_from_the_cache_generate_the_same_tokens(
    backend, tiny_params, program_folder
):
    """What a warm `gpt2 generate` runs: programs exported by an earlier process, read from disk."""
    generator = Generator(backend, tiny_params, TINY)
    sampler = SAMPLERS["top-k+top-p"]
    program_cache.disable()
    traced = generator.generate(PROMPTS, 12, sampler, seed=4)
    program_cache.enable(program_folder)
    exported = generator.generate(PROMPTS, 12, sampler, seed=4)
    files = sorted(program_folder.iterdir())
    assert [f.name.split("-")[0] for f in files] == ["_decode", "_prefill"]
    program_cache.enable(program_folder)  # a new process: nothing in memory, the files on disk
    written = [f.stat().st_mtime_ns for f in files]
    read_back = generator.generate(PROMPTS, 12, sampler, seed=4)
    assert [f.stat().st_mtime_ns for f in sorted(program_folder.iterdir())] == written
    assert exported == traced and read_back == traced
