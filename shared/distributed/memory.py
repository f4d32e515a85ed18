"""Per-device memory of a training state on a mesh, from shapes and the partition rules alone.

Nothing is allocated and no device is needed: the state's shapes come from `jax.eval_shape`, each
tensor's shard from its PartitionSpec and the mesh's axis sizes. So the plan for 1558M on eight
devices can be read on a laptop (`gpt2 doctor --mesh data=1,fsdp=8 --model-size 1558M`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from jax.sharding import PartitionSpec

from shared import params
from shared.config import GPT2Config
from shared.distributed import partition
from shared.distributed.mesh import MeshSpec


@dataclasses.dataclass(frozen=True)
class MemoryReport:
    """Bytes per device of the parameters and the optimizer state, sharded and replicated."""

    mesh: MeshSpec
    params: int
    opt_state: int
    replicated_params: int
    replicated_opt_state: int
    unsplit: tuple[str, ...]
    """Canonical paths the rules leave whole on every device (no axis divides)."""

    @property
    def total(self) -> int:
        return self.params + self.opt_state

    @property
    def replicated_total(self) -> int:
        return self.replicated_params + self.replicated_opt_state

    def lines(self) -> list[str]:
        gb = 1e9
        return [
            f"params {self.params / gb:.2f} GB + optimizer state {self.opt_state / gb:.2f} GB = "
            f"{self.total / gb:.2f} GB per device on {self.mesh}",
            f"replicated: {self.replicated_params / gb:.2f} GB + {self.replicated_opt_state / gb:.2f}"
            f" GB = {self.replicated_total / gb:.2f} GB per device",
            f"left whole (no axis divides): {', '.join(self.unsplit) or 'nothing'}",
        ]


def shard_bytes(shape: tuple[int, ...], dtype: Any, spec: PartitionSpec, sizes: Mapping) -> int:
    """Bytes of one device's shard of a tensor split by `spec` over axes of `sizes`."""
    shard = list(shape)
    for dim, axes in enumerate(spec):
        for axis in (axes,) if isinstance(axes, str) else axes or ():
            shard[dim] = -(-shard[dim] // sizes[axis])
    return math.prod(shard) * np.dtype(dtype).itemsize


def report(backend: Any, config: GPT2Config, optimizer: Any, mesh: MeshSpec) -> MemoryReport:
    """Per-device bytes of `backend`'s parameters and `optimizer`'s state for `config` on `mesh`."""

    def init() -> dict:
        tree = backend.init(config, jax.random.PRNGKey(0))
        return {"params": tree, "opt_state": optimizer.init(tree)}

    shapes = jax.eval_shape(init)
    sizes = mesh.sizes
    specs = partition.param_specs(backend, shapes["params"], config, sizes)
    opt_specs = partition.opt_state_specs(shapes["opt_state"], shapes["params"], specs)

    def total(tree: Any, tree_specs: Any, split: bool) -> int:
        leaves = jax.tree.leaves(tree)
        spec_leaves = jax.tree.leaves(tree_specs, is_leaf=lambda x: isinstance(x, PartitionSpec))
        return sum(
            shard_bytes(x.shape, x.dtype, spec if split else PartitionSpec(), sizes)
            for x, spec in zip(leaves, spec_leaves, strict=True)
        )

    canonical = partition.canonical_specs(config, sizes)
    unsplit = tuple(
        path
        for path in params.canonical_shapes(config)
        if canonical[path] == PartitionSpec() and mesh.fsdp > 1
    )
    return MemoryReport(
        mesh=mesh,
        params=total(shapes["params"], specs, True),
        opt_state=total(shapes["opt_state"], opt_specs, True),
        replicated_params=total(shapes["params"], specs, False),
        replicated_opt_state=total(shapes["opt_state"], opt_specs, False),
        unsplit=unsplit,
    )
