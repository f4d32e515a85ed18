"""Type names for JAX objects that JAX's own annotations do not give pyright.

`jax.Device` is a re-export by assignment of a class compiled into jaxlib, so pyright rejects it
in annotations; `Device` here is that class for the checker and `jax.Device` at run time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import jax

if TYPE_CHECKING:
    from jaxlib._jax import Device
else:
    Device = jax.Device

__all__ = ["Device"]
