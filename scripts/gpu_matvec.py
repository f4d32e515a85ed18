"""GPU experiment: how fast XLA runs batch-1 decode's matrix-vector products with the weights
stored [in, out] (all three backends now) against [out, in], and against [in, out] weights that
JAX's layout API stores column-major on the device, and against the layout XLA picks itself
(`Layout.AUTO`); the last two would change no backend.

A GPU profile of a batch-1 decode step showed the layer products reading their weights well below
the card's memory bandwidth, and the MLP's second product split into a kernel that writes
weight * activation [3072, 768] and a column reduction of it (the figures are in the performance
log of the docs). This times the 48 products of the 12 layers, chained as in a decode step, in
each layout and spelling, inside one jitted loop of decode steps, and prints the weight bytes read
per second. `scripts/gpu-bench experiments` runs it; `python scripts/gpu_matvec.py [STEPS]` alone
too.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.experimental.layout import Format, Layout
from jax.sharding import SingleDeviceSharding

from shared.benchmarks.timing import best_seconds

D, LAYERS = 768, 12
SHAPES = ((D, 3 * D), (D, D), (D, 4 * D), (4 * D, D))  # qkv, attention out, MLP in, MLP out


def weights(key: jax.Array, rows: int, dtype: jnp.dtype, transposed: bool) -> list[jax.Array]:
    keys = iter(jax.random.split(key, LAYERS * len(SHAPES)))
    return [
        (0.02 * jax.random.normal(next(keys), (n, k) if transposed else (k, n))).astype(dtype)
        for _ in range(LAYERS)
        for k, n in SHAPES
    ]


# JAX names a layout from the most major axis: (0, 1) is row-major, the default.
COLUMN_MAJOR = Layout(major_to_minor=(1, 0))
Product = Callable[[jax.Array, jax.Array], jax.Array]


def matmul(x: jax.Array, w: jax.Array) -> jax.Array:
    return x @ w


# spelling: (product, weights stored [out, in], the weights' layout on the device; None: default)
SPELLINGS: dict[str, tuple[Product, bool, Layout | None]] = {
    "x @ w, w [in, out]": (matmul, False, None),
    "x @ w.T, w [out, in]": (lambda x, w: x @ w.T, True, None),
    "einsum('bi,oi->bo'), w [out, in]": (lambda x, w: jnp.einsum("bi,oi->bo", x, w), True, None),
    "x @ w, w [in, out] column-major": (matmul, False, COLUMN_MAJOR),
    "x @ w, w [in, out] as XLA picks": (matmul, False, Layout.AUTO),
}


def steps_per_s(spelling: str, rows: int, dtype: jnp.dtype, steps: int) -> tuple[float, str]:
    """Decode steps per second, and the weights' memory order as compiled."""
    multiply, transposed, layout = SPELLINGS[spelling]
    ws = weights(jax.random.PRNGKey(0), rows, dtype, transposed)
    device = SingleDeviceSharding(jax.devices()[0])
    formats = None if layout is None else [Format(layout, device)] * len(ws)

    @functools.partial(jax.jit, in_shardings=None if formats is None else (formats, None))
    def decode(ws: list[jax.Array], x: jax.Array) -> jax.Array:
        def step(_: int, x: jax.Array) -> jax.Array:
            for layer in range(LAYERS):
                qkv, out, up, down = ws[4 * layer : 4 * layer + 4]
                h = multiply(x, qkv)[:, :D]
                x = x + multiply(jnp.tanh(h), out)
                x = x + multiply(jax.nn.gelu(multiply(x, up)), down)
            return x / jnp.linalg.norm(x, axis=-1, keepdims=True)

        return jax.lax.fori_loop(0, steps, step, x)

    x = jnp.ones((rows, D), dtype)
    shapes = [jax.ShapeDtypeStruct(w.shape, w.dtype, sharding=device) for w in ws]
    compiled = decode.lower(shapes, x).compile()
    ws = jax.device_put(ws, compiled.input_formats[0][0])
    order = {(0, 1): "row-major", (1, 0): "column-major"}
    picked = sorted({order.get(w.format.layout.major_to_minor, str(w.format.layout)) for w in ws})
    return steps / best_seconds(compiled, ws, x, repeats=5), "/".join(picked)


def main() -> None:
    steps = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    weight_bytes = {d: LAYERS * sum(k * n for k, n in SHAPES) * jnp.dtype(d).itemsize
                    for d in (jnp.float32, jnp.bfloat16)}  # fmt: skip
    print(f"{jax.devices()[0].device_kind}; weights read per step: fp32 "
          f"{weight_bytes[jnp.float32] / 1e6:.0f} MB")  # fmt: skip
    for dtype, batches in ((jnp.float32, (1, 8, 64)), (jnp.bfloat16, (1,))):
        for rows in batches:
            for spelling in SPELLINGS:
                rate, order = steps_per_s(spelling, rows, dtype, steps)
                print(f"{jnp.dtype(dtype).name} rows {rows:2d} {spelling:36s} "
                      f"{rate:8.0f} steps/s {rate * weight_bytes[dtype] / 1e9:8.0f} GB/s "
                      f"({order})", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
