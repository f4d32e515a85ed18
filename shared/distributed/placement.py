"""Arrays on a mesh: the NamedShardings of a training state, and global arrays built from host data.

Every function here works the same with one process or many: a global array is assembled from the
shards each process builds for its own devices (`jax.make_array_from_callback`), so no process
ever needs another's data, and a batch is read only where its rows are used.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from shared.config import GPT2Config
from shared.distributed import partition
from shared.jax_types import PyTree

if TYPE_CHECKING:
    from shared.backend import Backend


def named(mesh: Mesh, specs: Any) -> Any:
    """A tree of PartitionSpecs -> the same tree of NamedShardings on `mesh`."""
    return jax.tree.map(
        lambda spec: NamedSharding(mesh, spec),
        specs,
        is_leaf=lambda x: isinstance(x, PartitionSpec),
    )


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def state_shardings(mesh: Mesh, backend: Backend, config: GPT2Config, state: dict) -> dict:
    """NamedShardings of `{"params", "opt_state"}` (arrays or shape structs) under the rules."""
    sizes = dict(mesh.shape)
    specs = partition.param_specs(backend, state["params"], config, sizes)
    return {
        "params": named(mesh, specs),
        "opt_state": named(
            mesh, partition.opt_state_specs(state["opt_state"], state["params"], specs)
        ),
    }


def batch_sharding(mesh: Mesh, shape: Sequence[int], axes: Sequence[str]) -> NamedSharding:
    return NamedSharding(mesh, partition.spec_for(axes, shape, dict(mesh.shape)))


def gathered(mesh: Mesh, tree: PyTree) -> Any:
    """Inside `jit`: `tree` replicated on every device (an all-gather of sharded leaves). The
    trainer's loss sees whole parameters, so XLA all-gathers them and reduce-scatters their
    gradients (FSDP) instead of repartitioning activations."""
    return jax.lax.with_sharding_constraint(tree, jax.tree.map(lambda _: replicated(mesh), tree))


def put_params(mesh: Mesh, backend: Backend, tree: PyTree, config: GPT2Config) -> Any:
    """A backend's parameters, split over `mesh` by the rules."""
    specs = partition.param_specs(backend, tree, config, dict(mesh.shape))
    return put(tree, named(mesh, specs))


def put_rows(mesh: Mesh, arrays: Sequence[Any]) -> list[jax.Array]:
    """Generation inputs whose first axis is the batch ([batch, ...]), split by the `prompts` rule."""
    return [put(x, batch_sharding(mesh, np.shape(x), partition.PROMPTS)) for x in arrays]


def put(tree: PyTree, shardings: Any) -> Any:
    """Host (or single-device) values -> global arrays split by `shardings`.

    Every process passes the same values and keeps only its devices' shards.
    """

    def one(value: Any, sharding: NamedSharding) -> jax.Array:
        dtype = getattr(value, "dtype", None)
        if dtype is not None and jnp.issubdtype(dtype, jax.dtypes.prng_key):
            # Typed keys have no numpy form: place their data (one more, unsplit, axis).
            key_data = one(jax.random.key_data(value), sharding)
            return jax.random.wrap_key_data(key_data, impl=jax.random.key_impl(value))
        host = np.asarray(value)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree.map(one, tree, shardings)


def abstract(tree: PyTree, shardings: Any) -> Any:
    """Shape structs carrying `shardings`: a restore target that allocates nothing up front."""
    return jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings
    )


def global_batch(
    rows_of: Callable[[slice], np.ndarray],
    shape: Sequence[int],
    sharding: NamedSharding,
    row_axis: int,
) -> jax.Array:
    """The global batch of `shape`, split by `sharding`; `rows_of(rows)` reads only those rows.

    Each process calls `rows_of` for the rows of its own devices (once per distinct slice), so in
    a multi-process run every process reads its own slice of the data stream.
    """
    built: dict[tuple, np.ndarray] = {}

    def shard(index: tuple[slice, ...] | None) -> np.ndarray:
        assert index is not None, "make_array_from_callback asks for slices of the array"
        rows = index[row_axis]
        key = (rows.start, rows.stop)
        if key not in built:
            built[key] = rows_of(rows)
        rest = tuple(slice(None) if d == row_axis else s for d, s in enumerate(index))
        return built[key][rest]

    return jax.make_array_from_callback(tuple(shape), sharding, shard)
