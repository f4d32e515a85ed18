"""Stop strings: cut generated text before the first stop string to complete, and end rows on
device early.

A stop string is found in the decoded text on the host. Tokens whose own text contains a stop string
also end their row inside the jitted loop, so "\\n" stops at the newline token without a host check.
"""

from __future__ import annotations

from collections.abc import Sequence

from shared.tokenizer import TextTokenizer


def tokens_containing(tokenizer: TextTokenizer, stops: Sequence[str]) -> set[int]:
    """Ids of every token whose bytes contain one of `stops` whole."""
    needles = [s.encode("utf-8") for s in stops if s]
    if not needles:
        return set()
    vocabulary = tokenizer.vocabulary()
    return {i for needle in needles for i, token in enumerate(vocabulary) if needle in token}


class StopStringCutter:
    """Feeds a row's text through, releasing only text that cannot be part of a stop string.

    `push` returns the text safe to show so far; after a stop string appears, `stopped` is True and
    nothing after it is ever released.
    """

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = [s for s in stops if s]
        self._pending = ""
        self.stopped = False

    def push(self, text: str) -> str:
        if self.stopped:
            return ""
        self._pending += text
        # The stop string completed first (earliest end, then earliest start) is where the text
        # ends, so the result is the same however the text arrives in pieces.
        found = [(i + len(s), i) for s in self._stops if (i := self._pending.find(s)) >= 0]
        if found:
            self.stopped = True
            released, self._pending = self._pending[: min(found)[1]], ""
            return released
        hold = self._longest_stop_prefix_suffix()
        released = self._pending[: len(self._pending) - hold]
        self._pending = self._pending[len(released) :]
        return released

    def flush(self) -> str:
        released, self._pending = ("" if self.stopped else self._pending), ""
        return released

    def _longest_stop_prefix_suffix(self) -> int:
        """Length of the longest end of the pending text that begins some stop string."""
        best = 0
        for stop in self._stops:
            for n in range(min(len(stop) - 1, len(self._pending)), best, -1):
                if self._pending.endswith(stop[:n]):
                    best = n
                    break
        return best
