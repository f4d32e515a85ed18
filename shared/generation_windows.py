"""Generation past the context: text longer than the model's context keeps going in segments,
each a new prefill of the last tokens that leave room for at least half a context of new ones.

A row's segments depend only on its own length, so rows are batched with the rows that share their
segments, and each keeps the keys of its place in the whole batch: a row yields the same tokens
whatever other prompts it is batched with.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from shared.generation import Generator, row_keys
from shared.sampling import SamplingParams


def segments(prompt_length: int, max_new_tokens: int, n_ctx: int, slide: bool) -> tuple[int, ...]:
    """How many tokens each prefill-and-decode segment of one row generates.

    Without `slide`, one segment. With it, the first segment uses the whole context, then each
    sees the last tokens that leave room for at least half a context of new ones.
    """
    if not slide:
        return (max_new_tokens,)
    plan, length, remaining = [], prompt_length, max_new_tokens
    while remaining > 0:
        new_tokens = min(remaining, max(n_ctx - length, n_ctx // 2))
        plan.append(new_tokens)
        length, remaining = length + new_tokens, remaining - new_tokens
    return tuple(plan)


def sliding_stream(
    generator: Generator,
    rows: list[list[int]],
    max_new_tokens: int,
    sampling: SamplingParams,
    *,
    stop_tokens: frozenset[int],
    seed: int,
    chunk: int | None,
    slide: bool,
) -> Iterator[tuple[list[list[int]], list[bool]]]:
    """`generator.stream` of `rows` (token ids, checked against the context by the caller); with
    `slide`, rows whose text outgrows the context keep going in `segments` that each see the last
    tokens before them."""
    plans: dict[tuple[int, ...], list[int]] = {}
    for row, ids in enumerate(rows):
        plan = segments(len(ids), max_new_tokens, generator.config.n_ctx, slide)
        plans.setdefault(plan, []).append(row)
    new: list[list[int]] = [[] for _ in rows]
    done = [False] * len(rows)
    for plan, group in plans.items():
        for group_new, group_done in _segment_stream(
            generator, [rows[r] for r in group], group, len(rows), plan, sampling, stop_tokens,
            seed, chunk,
        ):  # fmt: skip
            for row, ids, finished in zip(group, group_new, group_done, strict=True):
                new[row], done[row] = ids, finished
            yield new, list(done)
            new = [[] for _ in rows]


def _segment_stream(
    generator: Generator,
    rows: list[list[int]],
    places: list[int],
    batch: int,
    plan: tuple[int, ...],
    sampling: SamplingParams,
    stop_tokens: frozenset[int],
    seed: int,
    chunk: int | None,
) -> Iterator[tuple[list[list[int]], list[bool]]]:
    """Rows that share the segment lengths `plan`, at `places` of a batch of `batch` rows."""
    n_ctx = generator.config.n_ctx
    history = [list(r) for r in rows]
    stopped = [False] * len(rows)
    whole = places == list(range(batch))
    for segment, new_tokens in enumerate(plan):
        if all(stopped):
            return
        last = segment == len(plan) - 1
        contexts = [h[-(n_ctx - new_tokens) :] for h in history]
        # Wrapped into the signed 64 bits that PRNG keys are made from.
        segment_seed = (seed + 7919 * segment + 2**63) % 2**64 - 2**63
        # The whole batch keys its rows from the seed inside the jitted prefill.
        keys = None if whole else row_keys(segment_seed, batch)[np.asarray(places)]
        for new, done in generator.stream_checked(
            contexts, new_tokens, sampling, stop_tokens=stop_tokens, keys=keys,
            seed=segment_seed, chunk=chunk,
        ):  # fmt: skip
            new = [[] if s else ids for s, ids in zip(stopped, new, strict=True)]
            for row, ids in enumerate(new):
                history[row] += ids
                stopped[row] |= done[row] and bool(ids) and ids[-1] in stop_tokens
            yield new, [s or (d and last) for s, d in zip(stopped, done, strict=True)]
