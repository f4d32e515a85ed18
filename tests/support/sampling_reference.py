"""The samplers written again from their definitions, in float64 numpy with sorts, to check
`shared.sampling` (which finds its thresholds by bisection, in float32) against.

Each function takes and returns one row of logits; -inf marks a token that is ruled out. `warp`
composes the draw's settings in the order the project (and Hugging Face) applies them: temperature,
top-k, top-p; the repetition rules come before them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def probabilities(logits: np.ndarray) -> np.ndarray:
    """The softmax, in float64 (a logit of -inf has probability 0)."""
    logits = np.asarray(logits, np.float64)
    weights = np.exp(logits - logits.max())
    return weights / weights.sum()


def penalize(logits: np.ndarray, seen: Sequence[int], penalty: float) -> np.ndarray:
    """CTRL's repetition penalty as Hugging Face applies it: the logit of each token in `seen`
    divided by `penalty` if positive, multiplied by it if not, so above 1 each is less likely."""
    logits = np.array(logits, np.float64)
    for token in set(seen):
        logits[token] = logits[token] / penalty if logits[token] > 0 else logits[token] * penalty
    return logits


def ngram_bans(sequence: Sequence[int], n: int) -> set[int]:
    """The tokens that would repeat an n-gram of `sequence`: those that followed, somewhere in it,
    the n - 1 tokens it ends with (so with n = 1, every token in it; n = 0 bans nothing)."""
    if n == 0:
        return set()
    sequence, context = list(sequence), n - 1
    suffix = sequence[len(sequence) - context :]
    return {
        sequence[start + context]
        for start in range(len(sequence) - context)
        if sequence[start : start + context] == suffix
    }


def repeat_rules(logits: np.ndarray, sequence: Sequence[int], penalty: float, n: int) -> np.ndarray:
    """`logits` after the repetition penalty over `sequence` and then its n-gram bans."""
    logits = penalize(logits, sequence, penalty)
    logits[sorted(ngram_bans(sequence, n))] = -np.inf
    return logits


def top_k(logits: np.ndarray, k: int | None) -> np.ndarray:
    """Keep the k largest logits and every logit equal to the k-th largest (None keeps all)."""
    if k is None:
        return np.asarray(logits, np.float64)
    kth = np.sort(logits)[::-1][min(k, len(logits)) - 1]
    return np.where(logits >= kth, logits, -np.inf)


def top_p(logits: np.ndarray, p: float) -> np.ndarray:
    """Keep the smallest set of most likely tokens whose probability reaches p, and every token
    tied with its least likely one (p = 1 keeps all)."""
    if p >= 1:
        return np.asarray(logits, np.float64)
    order = np.argsort(-np.asarray(logits), kind="stable")
    reached = np.cumsum(probabilities(logits)[order]) >= p
    last = order[np.argmax(reached)]  # the first token at which the sorted mass reaches p
    return np.where(logits >= logits[last], logits, -np.inf)


def warp(logits: np.ndarray, temperature: float, k: int | None, p: float) -> np.ndarray:
    """The logits a draw samples from: divided by `temperature` (> 0), then top-k, then top-p."""
    return top_p(top_k(np.asarray(logits, np.float64) / temperature, k), p)


def mass_above(logits: np.ndarray) -> np.ndarray:
    """Per token, the probability of the tokens more likely than it. Top-p keeps a token exactly
    when this is below p, so where it is within rounding of p a float32 sampler may go either way.
    """
    order = np.argsort(-np.asarray(logits), kind="stable")
    ranked = np.asarray(logits)[order]
    before = np.concatenate([[0.0], np.cumsum(probabilities(logits)[order])[:-1]])
    first_of_ties = np.searchsorted(-ranked, -ranked, side="left")
    mass = np.empty(len(order))
    mass[order] = before[first_of_ties]
    return mass
