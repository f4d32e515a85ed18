"""haiku_impl: GPT-2 as dm-haiku modules, with a plain name table to and from the canonical tree."""

from haiku_impl.backend import HaikuBackend, backend
from haiku_impl.convert import from_canonical, name_table, to_canonical
from haiku_impl.model import GPT2, MLP, Block, CausalSelfAttention, LayerNorm, forward, transformed

__all__ = [
    "GPT2",
    "MLP",
    "Block",
    "CausalSelfAttention",
    "HaikuBackend",
    "LayerNorm",
    "backend",
    "forward",
    "from_canonical",
    "name_table",
    "to_canonical",
    "transformed",
]
