"""Type names for JAX objects that JAX's own annotations do not give pyright (`Device`, `PyTree`),
and `as_traced`.

`jax.Device` is a re-export by assignment of a class compiled into jaxlib, so pyright rejects it
in annotations; `Device` here is that class for the checker and `jax.Device` at run time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeAlias, cast

import jax
import numpy as np

if TYPE_CHECKING:
    from jaxlib._jax import Device
else:
    Device = jax.Device

PyTree: TypeAlias = Any
"""A nested structure of arrays that `jax.tree` walks: a backend's parameters, an optimizer state.
JAX has no type for one; the name says what a value is where `Any` would not."""


def as_traced(value: np.generic | np.ndarray) -> jax.Array:
    """A host value given to a jitted function where it is traced as a `jax.Array`.

    Host values cost nothing to pass, where building a device array compiles a small program.
    Nothing is converted here: this only tells the checker what the jitted code will see.
    """
    return cast(jax.Array, value)


__all__ = ["Device", "PyTree", "as_traced"]
