"""The partition rules, in one place: how every tensor of a run is split over the mesh.

Each canonical tensor names its dimensions with logical axes (`LOGICAL_AXES`); one rule table
(`RULES`) maps logical axes to mesh axes, in priority order. A tensor gets, for each rule in turn,
the rule's mesh axes on the dimension of that logical axis, unless those mesh axes are already
used by the tensor or their size does not divide the dimension; then the next rule is tried.
So every tensor is split over `fsdp` along its first dividing axis in the order vocab, mlp, qkv,
heads, embed, ctx (GPT-2's axes from largest to smallest at its real sizes), and is replicated when
none divides: a shape that does not divide is never padded and never an error, it costs only
memory (`memory.report` lists such tensors). Batches are the one exception: the trainer asks for a
batch size that divides data x fsdp, since a replicated batch would silently repeat the work on
every device.

Backends hold the canonical tensors in their own trees (per-layer dicts, haiku scopes, Keras
variable paths); `backend_paths` asks the backend's own converter where each canonical tensor
goes, so the rules are written once, on canonical paths, for every backend.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import jax
import numpy as np
from jax.sharding import PartitionSpec

from shared import params
from shared.config import GPT2Config
from shared.distributed.mesh import DATA, FSDP
from shared.jax_types import PyTree

if TYPE_CHECKING:
    from shared.backend import Backend

LOGICAL_AXES: dict[str, tuple[str, ...]] = {
    "wte": ("vocab", "embed"),
    "wpe": ("ctx", "embed"),
    "blocks/ln_1/g": ("layer", "embed"),
    "blocks/ln_1/b": ("layer", "embed"),
    "blocks/attn/c_attn/w": ("layer", "embed", "qkv"),
    "blocks/attn/c_attn/b": ("layer", "qkv"),
    "blocks/attn/c_proj/w": ("layer", "heads", "embed"),
    "blocks/attn/c_proj/b": ("layer", "embed"),
    "blocks/ln_2/g": ("layer", "embed"),
    "blocks/ln_2/b": ("layer", "embed"),
    "blocks/mlp/c_fc/w": ("layer", "embed", "mlp"),
    "blocks/mlp/c_fc/b": ("layer", "mlp"),
    "blocks/mlp/c_proj/w": ("layer", "mlp", "embed"),
    "blocks/mlp/c_proj/b": ("layer", "embed"),
    "ln_f/g": ("embed",),
    "ln_f/b": ("embed",),
}
"""Canonical path -> the logical axis of each dimension (`heads` is c_proj's input: the heads'
outputs side by side)."""

TRAIN_BATCH = ("accumulation", "batch", "seq")
"""Logical axes of the trainer's batches [accumulation, batch, block + 1]."""
EVAL_BATCH = ("batch", "seq")
PROMPTS = ("prompts",)
"""The leading axis of generation's inputs (prompts [batch, bucket], row keys [batch, 2])."""

RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("batch", (DATA, FSDP)),  # training rows: every device sees its own rows
    ("prompts", (DATA,)),  # generation rows: an fsdp group decodes the same rows together
    ("vocab", (FSDP,)),
    ("mlp", (FSDP,)),
    ("qkv", (FSDP,)),
    ("heads", (FSDP,)),
    ("embed", (FSDP,)),
    ("ctx", (FSDP,)),
)
"""Logical axis -> mesh axes, first rule first. Axes not listed (layer, seq, accumulation) are
never split."""


def spec_for(
    axes: Sequence[str], shape: Sequence[int], mesh_sizes: Mapping[str, int]
) -> PartitionSpec:
    """The PartitionSpec `RULES` give a tensor of `shape` whose leading dimensions are named
    `axes` (dimensions past them are never split).

    Mesh axes of size 1 are left out, so a one-device mesh gives the fully replicated `P()`.
    """
    assigned: list[Any] = [None] * len(shape)
    used: set[str] = set()
    for logical, mesh_axes in RULES:
        if logical not in axes:
            continue
        dim = axes.index(logical)
        mesh_axes = tuple(a for a in mesh_axes if mesh_sizes.get(a, 1) > 1)
        if assigned[dim] is not None or not mesh_axes or used.intersection(mesh_axes):
            continue
        if shape[dim] % math.prod(mesh_sizes[a] for a in mesh_axes):
            continue
        assigned[dim] = mesh_axes[0] if len(mesh_axes) == 1 else mesh_axes
        used.update(mesh_axes)
    while assigned and assigned[-1] is None:
        assigned.pop()
    return PartitionSpec(*assigned)


def canonical_specs(config: GPT2Config, mesh_sizes: Mapping[str, int]) -> dict[str, PartitionSpec]:
    """`{canonical path: PartitionSpec}` of the stacked canonical tree."""
    return {
        path: spec_for(LOGICAL_AXES[path], shape, mesh_sizes)
        for path, shape in params.canonical_shapes(config).items()
    }


def backend_paths(backend: Backend, config: GPT2Config) -> Any:
    """The backend's parameter tree for `config`, with each leaf replaced by its canonical path.

    Found by the backend's own (exact) `from_canonical` on a one-wide model of the same depth
    whose every tensor is filled with its path's index: wherever an index lands, that path went.
    """
    tiny = GPT2Config(n_vocab=1, n_ctx=1, n_embd=1, n_head=1, n_layer=config.n_layer)
    shapes = params.canonical_shapes(tiny)
    names = list(shapes)
    tagged = {path: np.full(shape, i, np.float32) for i, (path, shape) in enumerate(shapes.items())}
    converted = backend.from_canonical(params.unflatten(tagged), tiny)
    return jax.tree.map(lambda x: names[int(np.asarray(x).flat[0])], converted)


def param_specs(
    backend: Backend, tree: PyTree, config: GPT2Config, mesh_sizes: Mapping[str, int]
) -> Any:
    """PartitionSpecs for the backend's parameters `tree` (arrays or shape structs).

    A leaf with one dimension fewer than its canonical tensor is one layer of it (no layer axis).
    """

    def leaf_spec(path: str, leaf: Any) -> PartitionSpec:
        axes = LOGICAL_AXES[path]
        if len(leaf.shape) == len(axes) - 1:
            axes = axes[1:]
        return spec_for(axes, leaf.shape, mesh_sizes)

    return jax.tree.map(leaf_spec, backend_paths(backend, config), tree)


def opt_state_specs(opt_state: Any, tree: PyTree, specs: Any) -> Any:
    """PartitionSpecs for an optax state: every copy of the parameter tree inside it (Adam's mu
    and nu) is split like the parameters; everything else (step counts) is replicated."""
    structure = jax.tree.structure(tree)

    def is_params(node: Any) -> bool:
        return jax.tree.structure(node) == structure

    return jax.tree.map(
        lambda node: specs if is_params(node) else PartitionSpec(), opt_state, is_leaf=is_params
    )


def batch_spec(
    shape: Sequence[int], mesh_sizes: Mapping[str, int], axes: Sequence[str] = TRAIN_BATCH
) -> PartitionSpec:
    return spec_for(axes, shape, mesh_sizes)
