"""What the Python API takes as a number: Python and numpy ints and floats alike, but never a bool,
which would pass for 1 and hide a misplaced argument."""

from __future__ import annotations

import numbers
from typing import TypeGuard

import numpy as np


def is_integer(value: object) -> TypeGuard[int | np.integer]:
    """A Python or numpy integer (the `numbers.Integral` types in use), not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_real(value: object) -> TypeGuard[int | float | np.integer | np.floating]:
    """A Python or numpy real number (the `numbers.Real` types in use), not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)
