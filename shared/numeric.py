"""What the Python API takes as a number: Python and numpy ints and floats alike, but never a bool,
which would pass for 1 and hide a misplaced argument."""

from __future__ import annotations

import numbers


def is_integer(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_real(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)
