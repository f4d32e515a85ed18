"""GPU experiment: whole-model decode with the blocks' kernels stored column-major.

`scripts/gpu_matvec.py` times the 48 layer products alone; this times the library's own Generator
(124M, random weights, 32-token prompt, 256 new tokens, greedy) with its parameters as every
backend holds them, then with each block kernel ([in, out]) moved to column-major memory by
JAX's layout API, which `jax.jit` follows for committed arrays: the same programs, no backend
changed. Rounds alternate the two placements. `scripts/gpu-bench experiments` runs it;
`python scripts/gpu_layout.py haiku keras` picks other backends.
"""

from __future__ import annotations

import sys
from typing import Any

import jax
from gpu_matvec import COLUMN_MAJOR
from jax.experimental.layout import Format

from shared.benchmarks.generation import decode_tokens_per_s, random_model, random_prompts
from shared.generation import GREEDY, Generator


def column_major_kernels(params: Any, embedding_rows: set[int]) -> Any:
    """`params` with every 2-D leaf but the embeddings placed column-major."""

    def place(leaf: jax.Array) -> jax.Array:
        if leaf.ndim != 2 or leaf.shape[0] in embedding_rows:
            return leaf
        return jax.device_put(leaf, Format(COLUMN_MAJOR, leaf.sharding))

    return jax.tree.map(place, params)


def main() -> None:
    print(jax.devices()[0].device_kind, flush=True)
    for name in sys.argv[1:] or ["functional"]:
        backend, params, config = random_model("124M", name)
        placements = {
            "row-major (now)": params,
            "column-major kernels": column_major_kernels(params, {config.n_vocab, config.n_ctx}),
        }
        generators = {label: Generator(backend, p, config) for label, p in placements.items()}
        prompts = random_prompts(1, 32, config)
        first, second = (g.generate(prompts, 256, GREEDY)[0].tokens for g in generators.values())
        same = sum(a == b for a, b in zip(first, second, strict=True))
        print(f"{name}: greedy tokens equal in both placements: {same}/256", flush=True)
        for batch in (1, 8):
            for round_ in range(2):
                for label, generator in generators.items():
                    rate, compile_s = decode_tokens_per_s(generator, batch, 32, 256, GREEDY)
                    print(f"{name} batch {batch} round {round_ + 1} {label:22s} "
                          f"{rate:9.1f} tokens/s (first run {compile_s:.1f} s)",
                          flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
