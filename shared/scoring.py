"""Scoring text: each token's log-probability given the text before it, the figure behind a model's
perplexity and bits per byte.

Text longer than the context is read in windows of the full context that start `stride` tokens
apart (Hugging Face's "perplexity of fixed-length models"): each window scores only the tokens the
windows before it did not, so every token is scored once, with at least `n_ctx - stride` tokens of
context once the first window is passed. A smaller stride gives more context and costs more
windows; `stride = n_ctx` reads disjoint windows.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import sys
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from shared.backend import Backend
from shared.config import GPT2Config
from shared.generation import check_token_ids, prompt_bucket
from shared.jax_types import PyTree
from shared.loss import target_log_probs
from shared.numeric import is_integer


@dataclasses.dataclass(frozen=True)
class TextScore:
    """The scored tokens of a text and each one's natural-log probability."""

    token_ids: np.ndarray
    log_probs: np.ndarray
    n_bytes: int
    """UTF-8 bytes of the scored tokens, for bits per byte (comparable across tokenizers)."""
    stride: int
    """Tokens between the starts of consecutive windows (a perplexity depends on it)."""

    @property
    def n_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def log_prob(self) -> float:
        """The natural-log probability of all the scored tokens together."""
        return float(np.sum(self.log_probs, dtype=np.float64))

    @property
    def nll(self) -> float:
        """Mean negative log-likelihood per token, in nats (the training loss)."""
        return float(-np.mean(self.log_probs, dtype=np.float64))

    @property
    def perplexity(self) -> float:
        """exp(nll); infinite past float64's range (a broken model, not a real text's figure)."""
        return math.exp(self.nll) if self.nll < math.log(sys.float_info.max) else math.inf

    @property
    def bits_per_byte(self) -> float:
        return -self.log_prob / math.log(2) / self.n_bytes


def plan_windows(n_targets: int, length: int, stride: int) -> list[tuple[int, int, int]]:
    """(start, first, end) of each window over `n_targets` next-token targets: the window reads
    tokens[start:end] and scores targets first..end-1 (target i is token i + 1, predicted from
    tokens[start:i + 1])."""
    plan, scored, start = [], 0, 0
    while scored < n_targets:
        end = min(start + length, n_targets)
        plan.append((start, scored, end))
        scored, start = end, start + stride
    return plan


@functools.partial(jax.jit, static_argnames=("backend", "config"))
def _window_log_probs(
    params: PyTree, inputs: jax.Array, targets: jax.Array, *, backend: Backend, config: GPT2Config
) -> jax.Array:
    positions = jnp.broadcast_to(jnp.arange(inputs.shape[1]), inputs.shape)
    logits, _ = backend.apply(params, inputs, positions, None, config=config)
    return target_log_probs(logits, targets)


class Scorer:
    """Log-probabilities of token ids under one model, `batch_size` windows per compiled call."""

    def __init__(self, backend: Backend, params: PyTree, config: GPT2Config) -> None:
        self.backend, self.params, self.config = backend, params, config

    def log_probs(
        self, ids: Sequence[int], stride: int, *, batch_size: int = 1, progress: bool = False
    ) -> np.ndarray:
        """log p(ids[i] | ids[:i]) for every i >= 1, over windows `stride` tokens apart; float32
        [len(ids) - 1]."""
        n_ctx = self.config.n_ctx
        if not is_integer(stride) or not 1 <= stride <= n_ctx:
            raise ValueError(
                f"stride must be an integer from 1 to the context, {n_ctx}, got {stride!r}."
            )
        if not is_integer(batch_size) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}.")
        if len(ids) < 2:
            raise ValueError(
                f"Scoring needs at least two tokens (one to predict from), got {len(ids)}."
            )
        check_token_ids(ids, "The text to score", self.config.n_vocab)
        stride, batch_size = int(stride), int(batch_size)  # numpy ints as Python ints
        tokens = np.asarray(ids, dtype=np.int32)
        length = min(n_ctx, prompt_bucket(len(tokens) - 1))
        plan = plan_windows(len(tokens) - 1, length, stride)
        batch_size = min(batch_size, len(plan))  # a short text pads no empty windows
        out: list[np.ndarray] = []
        batches = range(0, len(plan), batch_size)
        for begin in tqdm(batches, desc="score", file=sys.stderr, disable=not progress):
            windows = plan[begin : begin + batch_size]
            inputs = np.zeros((batch_size, length), np.int32)
            targets = np.zeros((batch_size, length), np.int32)
            for row, (start, _, end) in enumerate(windows):
                inputs[row, : end - start] = tokens[start:end]
                targets[row, : end - start] = tokens[start + 1 : end + 1]
            scores = np.asarray(
                _window_log_probs(
                    self.params, inputs, targets, backend=self.backend, config=self.config
                )
            )
            for row, (start, first, end) in enumerate(windows):
                out.append(scores[row, first - start : end - start])
        return np.concatenate(out)
