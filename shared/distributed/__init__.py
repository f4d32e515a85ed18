"""Scale beyond one device with JAX's own runtime: a named mesh, one table of partition rules, and
`jax.distributed` for several hosts. No hand-written communication: arrays carry `NamedSharding`s
and `jit` partitions the computation.

- `mesh`: `--mesh data=D,fsdp=F` -> a `jax.sharding.Mesh`.
- `partition`: the rule table (logical axes of each canonical tensor -> mesh axes) and the
  shardings of parameters, optimizer state and batches that follow from it.
- `runtime`: `jax.distributed.initialize` from flags or environment variables, and each process'
  own slice of a global batch.
- `memory`: per-device bytes of parameters + optimizer state under a mesh, computed from shapes.
"""
