"""Hugging Face's `no_repeat_ngram_size` rule written over a plain list, to check ours against."""

from __future__ import annotations


def hf_ngram_bans(sequence: list[int], n: int) -> set[int]:
    """The tokens that would complete an n-gram `sequence` already holds (NoRepeatNGram's rule)."""
    if len(sequence) + 1 < n:
        return set()
    followers: dict[tuple, set[int]] = {}
    for gram in zip(*[sequence[i:] for i in range(n)], strict=False):
        followers.setdefault(gram[:-1], set()).add(gram[-1])
    return followers.get(tuple(sequence[len(sequence) - n + 1 :]), set())
