"""Batched generation over the backend contract: one prefill, then a jitted `lax.while_loop` of
single-token steps over a preallocated KV cache.

Prompts of different lengths are left-padded to a shared bucket length, with per-row positions and a
cache mask, so row i yields exactly the tokens prompt i would yield alone. Shapes are bucketed (prompt
length to a power of two, cache slots to a multiple of 64) so a new prompt length or token budget
rarely recompiles; budgets, sampling settings and stop tokens are traced values.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterable, Iterator, Sequence, Sized
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from shared import program_cache
from shared.apply_options import ApplyOptions
from shared.backend import Backend
from shared.config import GPT2Config
from shared.distributed import placement
from shared.jax_types import PyTree, as_traced
from shared.kv_cache import KVCache
from shared.numeric import is_integer
from shared.request import check_max_new_tokens, check_seed
from shared.sampling import (
    SamplingParams,
    ngram_completions,
    penalize_repeats,
    sample,
    token_set,
)

GREEDY = SamplingParams(temperature=0.0)
MIN_PROMPT_BUCKET = 16
SLOT_BUCKET = 64


def prompt_bucket(length: int) -> int:
    """Padded prompt length: the next power of two, at least MIN_PROMPT_BUCKET."""
    return max(MIN_PROMPT_BUCKET, 1 << (max(length, 1) - 1).bit_length())


def slot_bucket(n_slots: int) -> int:
    """Cache length: the next multiple of SLOT_BUCKET."""
    return -(-n_slots // SLOT_BUCKET) * SLOT_BUCKET


def row_keys(seed: int | jax.Array, n_rows: int) -> jax.Array:
    """One PRNG key per row, derived from `seed` and the row index."""
    base = jax.random.PRNGKey(seed)
    return jax.vmap(lambda i: jax.random.fold_in(base, i))(jnp.arange(n_rows))


class DecodeState(NamedTuple):
    """Everything the decode loop carries; lives on device between streaming chunks."""

    cache: KVCache
    tokens: jax.Array  # [batch, max_new] int32, generated ids (pad after a row is done)
    lengths: jax.Array  # [batch] int32, tokens generated per row, its stop token included
    position: jax.Array  # [batch] int32, position of the last generated token
    step: jax.Array  # int32, tokens generated so far (same for every row)
    done: jax.Array  # [batch] bool
    keys: jax.Array  # [batch] PRNG keys, folded with `step` for each draw
    prompt: jax.Array  # [batch, bucket] int32, the left-padded prompts (cache.mask marks them)


class _Controls(NamedTuple):
    """Traced per-call settings: changing them never recompiles. Built from host scalars
    and arrays (`as_traced`), which jit passes in as the arrays named here."""

    temperature: jax.Array
    top_k: jax.Array
    top_p: jax.Array
    repetition_penalty: jax.Array
    stop_mask: jax.Array  # [n_vocab] bool
    max_new_tokens: jax.Array  # int32


# The decode programs' argument and result types, by name, for `shared.program_cache`'s files.
for _type in (KVCache, DecodeState, _Controls):
    jax.export.register_namedtuple_serialization(
        _type, serialized_name=f"gpt2_jax.{_type.__name__}"
    )


def apply_repeat_rules(
    scores: jax.Array,
    cache: KVCache,
    prompt: jax.Array,
    tokens: jax.Array,
    repetition_penalty: jax.Array,
    no_repeat_ngram: int,
) -> jax.Array:
    """`scores` [batch, vocab] (logits, or log-probabilities in beam search) after the
    repetition penalty and the n-gram bans (-inf), for the sequences the cache holds.

    prompt: [batch, bucket], the left-padded prompts; tokens: [batch, slots - bucket], the output.
    """
    # Each row's sequence so far, prompt and output, is what the cache holds: slot i is prompt
    # slot i, then output token i - bucket, up to cache.index, without the left padding.
    history = jnp.concatenate([prompt, tokens], axis=1)
    in_sequence = cache.mask & (jnp.arange(history.shape[1]) < cache.index)
    vocab = scores.shape[1]
    scores = penalize_repeats(scores, token_set(history, in_sequence, vocab), repetition_penalty)
    if no_repeat_ngram:
        banned = ngram_completions(history, in_sequence, cache.index, no_repeat_ngram, vocab)
        scores = jnp.where(banned, -jnp.inf, scores)
    return scores


def _emit(
    state: DecodeState, logits: jax.Array, controls: _Controls, no_repeat_ngram: int
) -> DecodeState:
    """Sample the next token of every row from `logits` [batch, vocab] and record it."""
    step_keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(state.keys, state.step)
    logits = apply_repeat_rules(
        logits, state.cache, state.prompt, state.tokens, controls.repetition_penalty,
        no_repeat_ngram,
    )  # fmt: skip
    token = sample(logits, step_keys, controls.temperature, controls.top_k, controls.top_p)
    token = jnp.where(state.done, 0, token)
    tokens = jax.lax.dynamic_update_slice(state.tokens, token[:, None], (0, state.step))
    lengths = jnp.where(state.done, state.lengths, state.step + 1)
    done = state.done | controls.stop_mask[token] | (state.step + 1 >= controls.max_new_tokens)
    return state._replace(tokens=tokens, lengths=lengths, step=state.step + 1, done=done)


def prefill(
    params: PyTree,
    prompt: jax.Array,
    prompt_mask: jax.Array,
    backend: Backend,
    config: GPT2Config,
    max_slots: int,
) -> tuple[jax.Array, KVCache, jax.Array]:
    """Run the left-padded prompts [batch, bucket] into a new cache of `max_slots` slots:
    (the last position's logits [batch, n_vocab], the cache, each row's last position)."""
    bucket = prompt.shape[1]
    pad = bucket - jnp.sum(prompt_mask, axis=1)
    positions = jnp.maximum(jnp.arange(bucket)[None, :] - pad[:, None], 0)
    cache = backend.init_cache(config, prompt.shape[0], max_slots, _param_dtype(params))
    cache = cache._replace(mask=cache.mask.at[:, :bucket].set(prompt_mask))
    logits, cache = backend.apply(
        params, prompt, positions, cache, config=config, options=ApplyOptions(last_only=True)
    )
    assert cache is not None, "a forward pass given a cache returns it advanced"
    return logits[:, -1], cache, positions[:, -1]


@functools.partial(jax.jit, static_argnames=("backend", "config", "max_slots", "no_repeat_ngram"))
def _prefill(
    params: PyTree,
    prompt: jax.Array,
    prompt_mask: jax.Array,
    keys: jax.Array | None,
    seed: jax.Array,
    controls: _Controls,
    *,
    backend: Backend,
    config: GPT2Config,
    max_slots: int,
    no_repeat_ngram: int,
) -> DecodeState:
    """Run the padded prompts [batch, bucket] through the model and sample the first token.

    Row keys come from `seed` unless `keys` are given.
    """
    batch, bucket = prompt.shape
    keys = row_keys(seed, batch) if keys is None else keys
    logits, cache, position = prefill(params, prompt, prompt_mask, backend, config, max_slots)
    state = DecodeState(
        cache=cache,
        tokens=jnp.zeros((batch, max_slots - bucket), jnp.int32),
        lengths=jnp.zeros((batch,), jnp.int32),
        position=position,
        step=jnp.zeros((), jnp.int32),
        done=jnp.zeros((batch,), bool),
        keys=keys,
        prompt=prompt,
    )
    return _emit(state, logits, controls, no_repeat_ngram)


@functools.partial(
    jax.jit,
    static_argnames=("backend", "config", "no_repeat_ngram"),
    donate_argnames=("state",),
)
def _decode(
    params: PyTree,
    state: DecodeState,
    stop_at: jax.Array,
    controls: _Controls,
    *,
    backend: Backend,
    config: GPT2Config,
    no_repeat_ngram: int,
) -> DecodeState:
    """Generate one token per step until `stop_at` tokens exist or every row is done."""

    def running(state: DecodeState) -> jax.Array:
        return (state.step < stop_at) & ~jnp.all(state.done)

    def step(state: DecodeState) -> DecodeState:
        last = jax.lax.dynamic_slice_in_dim(state.tokens, state.step - 1, 1, axis=1)
        position = state.position + 1
        logits, cache = backend.apply(params, last, position[:, None], state.cache, config=config)
        state = state._replace(cache=cache, position=position)
        return _emit(state, logits[:, 0], controls, no_repeat_ngram)

    return jax.lax.while_loop(running, step, state)


def left_pad(prompts: Sequence[Sequence[int]], n_ctx: int) -> tuple[np.ndarray, np.ndarray]:
    """The prompts right-aligned in a [batch, bucket] int32 array, and the bool mask of their
    tokens (False on the padding); the bucket is `prompt_bucket` of the longest, at most n_ctx."""
    bucket = min(prompt_bucket(max(len(p) for p in prompts)), n_ctx)
    padded = np.zeros((len(prompts), bucket), np.int32)
    mask = np.zeros((len(prompts), bucket), bool)
    for row, prompt in enumerate(prompts):
        padded[row, bucket - len(prompt) :] = prompt
        mask[row, bucket - len(prompt) :] = True
    return padded, mask


def token_mask(ids: Iterable[int], n_vocab: int) -> np.ndarray:
    """[n_vocab] bool, True at `ids` (the stop tokens)."""
    mask = np.zeros(n_vocab, bool)
    mask[list(ids)] = True
    return mask


def check_prompts(prompts: Sequence[Sized]) -> None:
    """Fail with one sentence if a prompt of token ids is empty (an empty text prompt is
    `<|endoftext|>`'s id by then: `GPT2.prompt_ids`)."""
    for i, prompt in enumerate(prompts):
        if len(prompt) == 0:  # not `not prompt`: numpy arrays of ids have no truth value
            raise ValueError(f"Prompt {i} is empty; give at least one token of text.")


def check_chunk(chunk: int | None) -> None:
    if chunk is not None and not (is_integer(chunk) and chunk >= 1):
        raise ValueError(
            f"chunk must be an integer >= 1 (or None: all tokens at once), got {chunk!r}."
        )


def check_token_ids(ids: Iterable[object], owner: str, n_vocab: int) -> None:
    """Name the first of `ids` that is not an integer of a vocabulary of `n_vocab` ids (the
    backends' embedding lookups would disagree on it)."""
    bad = next((t for t in ids if not (is_integer(t) and 0 <= t < n_vocab)), None)
    if bad is not None:
        raise ValueError(
            f"{owner} holds {bad!r}, which is not a token id of the model's vocabulary of "
            f"{n_vocab} ids (integers 0 to {n_vocab - 1})."
        )


def _param_dtype(params: PyTree) -> jnp.dtype:
    leaves = [x for x in jax.tree.leaves(params) if jnp.issubdtype(x.dtype, jnp.floating)]
    return leaves[0].dtype


@dataclasses.dataclass
class Completion:
    """One row's result: generated ids (the stop token excluded) and why it ended."""

    tokens: list[int]
    finish_reason: str  # "stop" (a stop token) or "length" (max_new_tokens reached)


class Generator:
    """Generates token ids for a batch of prompts with one backend's parameters.

    Compiled programs are cached per (batch, prompt bucket, cache bucket), so a long-lived Generator
    (the interactive CLI, a server) compiles once per shape family.

    With a `mesh` (`shared.distributed.mesh.make_mesh`), the parameters are split over its `fsdp`
    axis and the rows of a batch over its `data` axis, by the rules of `shared.distributed`; every
    row still yields exactly what it yields unsharded (fp32: bf16 sums split over fsdp round
    differently).
    """

    def __init__(
        self, backend: Backend, params: PyTree, config: GPT2Config, *, mesh: Mesh | None = None
    ) -> None:
        self.backend, self.config, self.mesh = backend, config, mesh
        self.params = (
            params if mesh is None else placement.put_params(mesh, backend, params, config)
        )

    def check_lengths(self, prompts: Sequence[Sequence[int]], max_new_tokens: int) -> None:
        """Fail with one sentence if a prompt is empty, holds an id outside the vocabulary (the
        backends' embedding lookups would disagree on it) or prompt + new tokens exceed the
        context. max_new_tokens is an integer >= 1 by then (`check_max_new_tokens`)."""
        check_prompts(prompts)
        if len(prompts) == 0:
            raise ValueError("Give at least one prompt.")
        for i, prompt in enumerate(prompts):
            check_token_ids(prompt, f"Prompt {i}", self.config.n_vocab)
            if len(prompt) + max_new_tokens > self.config.n_ctx:
                raise ValueError(
                    f"Prompt {i} has {len(prompt)} tokens and {max_new_tokens} new tokens were "
                    f"asked for, {len(prompt) + max_new_tokens} in all, but the model's context is "
                    f"{self.config.n_ctx} tokens; shorten the prompt, lower max_new_tokens, or "
                    "let the text slide over the context (truncate=True, `--truncate`)."
                )

    def _check_options(
        self,
        stop_tokens: list[int],
        keys: jax.Array | None,
        n_rows: int,
        seed: int,
        chunk: int | None,
    ) -> None:
        check_token_ids(stop_tokens, "stop_tokens", self.config.n_vocab)
        if keys is not None and len(keys) != n_rows:
            raise ValueError(
                f"keys holds {len(keys)} PRNG keys for {n_rows} prompts; give one each."
            )
        check_seed(seed)
        check_chunk(chunk)

    def stream(
        self,
        prompts: Sequence[Sequence[int]],
        max_new_tokens: int,
        sampling: SamplingParams = GREEDY,
        *,
        stop_tokens: Iterable[int] = (),
        keys: jax.Array | None = None,
        seed: int = 0,
        chunk: int | None = None,
    ) -> Iterator[tuple[list[list[int]], list[bool]]]:
        """Yield (new ids per row, done per row) after the first token and every `chunk` steps.

        New ids of a row include its stop token when it stops. `keys` ([batch] PRNG keys) overrides
        the per-row keys derived from `seed`. `chunk` None: one yield after the first token, one
        at the end.
        """
        check_max_new_tokens(max_new_tokens)
        self.check_lengths(prompts, max_new_tokens)
        stop_tokens = list(stop_tokens)
        self._check_options(stop_tokens, keys, len(prompts), seed, chunk)
        yield from self.stream_checked(
            prompts, int(max_new_tokens), sampling, stop_tokens=stop_tokens, keys=keys,
            seed=int(seed), chunk=chunk,
        )  # fmt: skip

    def stream_checked(
        self,
        prompts: Sequence[Sequence[int]],
        max_new_tokens: int,
        sampling: SamplingParams,
        *,
        stop_tokens: Iterable[int],
        keys: jax.Array | None,
        seed: int,
        chunk: int | None,
    ) -> Iterator[tuple[list[list[int]], list[bool]]]:
        """`stream` for arguments already checked where they entered: the text API checks a
        request once, as text (`shared.request`), and its prompts' lengths once, as ids."""
        padded, mask = left_pad(prompts, self.config.n_ctx)
        batch, bucket = padded.shape
        stop_mask = token_mask(stop_tokens, self.config.n_vocab)
        # Host values throughout: jit takes them as they are, while building device arrays here
        # would compile a small program each (a noticeable part of a CLI start).
        controls = _Controls(
            *map(as_traced, sampling.as_arrays()),
            repetition_penalty=as_traced(np.float32(sampling.repetition_penalty)),
            stop_mask=as_traced(stop_mask),
            max_new_tokens=as_traced(np.int32(max_new_tokens)),
        )
        # Row keys come from an int32 seed inside the jitted prefill; other seeds (jax keys a
        # Python int by all its 64 bits) and meshes (which place the keys) derive them here.
        keyed_in_jit = keys is None and self.mesh is None and -(2**31) <= seed < 2**31
        if keys is None and not keyed_in_jit:
            keys = row_keys(seed, batch)
        if self.mesh is not None:
            padded, mask, keys = placement.put_rows(self.mesh, (padded, mask, keys))
        static = {
            "backend": self.backend,
            "config": self.config,
            "no_repeat_ngram": sampling.no_repeat_ngram_size,
        }
        state = program_cache.call(
            _prefill,
            (self.params, padded, mask, keys, np.int32(seed if keyed_in_jit else 0), controls),
            {**static, "max_slots": slot_bucket(bucket + max_new_tokens)},
        )
        decode = program_cache.bind(
            _decode, (self.params, state, np.int32(0), controls), static, donate_argnums=(1,)
        )
        emitted = 0
        chunk = chunk or max_new_tokens
        while True:
            step, lengths, done, tokens = jax.device_get(
                (state.step, state.lengths, state.done, state.tokens)
            )
            tokens = tokens[:, emitted : emitted + chunk]
            new = [tokens[row, : max(0, lengths[row] - emitted)].tolist() for row in range(batch)]
            yield new, done.tolist()
            emitted = int(step)
            if done.all():
                return
            stop_at = np.int32(min(emitted + chunk, max_new_tokens))
            state = decode(self.params, state, stop_at, controls)

    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        max_new_tokens: int,
        sampling: SamplingParams = GREEDY,
        *,
        stop_tokens: Iterable[int] = (),
        keys: jax.Array | None = None,
        seed: int = 0,
    ) -> list[Completion]:
        """Generate to completion in one decode call; returns one Completion per prompt."""
        stop_tokens = set(stop_tokens)
        rows: list[list[int]] = [[] for _ in prompts]
        for new, _ in self.stream(
            prompts, max_new_tokens, sampling, stop_tokens=stop_tokens, keys=keys, seed=seed
        ):
            for row, ids in zip(rows, new, strict=True):
                row.extend(ids)
        return [
            Completion(row[:-1], "stop")
            if row and row[-1] in stop_tokens
            else Completion(row, "length")
            for row in rows
        ]
