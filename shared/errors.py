"""The one exception type users see: its message is a sentence saying what was wrong and what to do."""


class GPT2Error(Exception):
    """A user-facing failure (bad input, unreachable download, corrupt file). The CLI prints its
    message alone, without a traceback."""
