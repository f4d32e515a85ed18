"""LoRA vs full fine-tuning, measured in one run: trainable parameters and AdamW state from the
shapes (`jax.eval_shape`, nothing allocated) at 124M and 774M, then step time and peak host
memory of the shared trainer's step (at 124M unless `--size` says otherwise), each setting in
its own process, alternated.

`python scripts/lora_costs.py [--size 774M] [--steps N] [--rounds R]` prints the markdown tables
docs/benchmarks.md quotes.
"""

from __future__ import annotations

import argparse
import functools
import resource
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from shared.backend import get_backend
from shared.config import MODEL_SIZES
from shared.lora import LoraConfig
from shared.lora_backend import lora_backend
from shared.training.config import TrainingConfig
from shared.training.optimizer import make_optimizer
from shared.training.step import make_train_step
from shared.weights.runs import fresh_adapters

SETTINGS = {
    "full": None,
    "LoRA r8 c_attn": LoraConfig(8, 16.0, ("c_attn",)),
    "LoRA r8 all four": LoraConfig(8, 16.0, ("c_attn", "attn_c_proj", "c_fc", "mlp_c_proj")),
}
BATCH, SEQ = 4, 256


def _trainable(size: str, lora: LoraConfig | None) -> object:
    backend, config = get_backend("functional"), MODEL_SIZES[size]
    if lora is None:
        return backend.init(config, jax.random.PRNGKey(0))
    return fresh_adapters(backend, config, lora)


def state_bytes(size: str, lora: LoraConfig | None) -> tuple[int, int]:
    """(trainable parameters, AdamW state bytes) from shapes alone."""
    optimizer = make_optimizer(TrainingConfig())
    params = jax.eval_shape(functools.partial(_trainable, size, lora))
    state = jax.eval_shape(optimizer.init, params)
    count = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
    nbytes = sum(int(np.prod(x.shape)) * x.dtype.itemsize for x in jax.tree.leaves(state))
    return count, nbytes


def time_steps(name: str, size: str, steps: int) -> None:
    """Child process: median step time (after the compiling one) and peak RSS of one setting."""
    lora, backend, config = SETTINGS[name], get_backend("functional"), MODEL_SIZES[size]
    optimizer = make_optimizer(TrainingConfig())
    base = backend.init(config, jax.random.PRNGKey(0))
    if lora is None:
        params, frozen, model = base, None, backend
    else:
        params, frozen, model = (
            fresh_adapters(backend, config, lora),
            base,
            lora_backend(backend, lora),
        )
    step = make_train_step(model, config, optimizer)
    opt_state = optimizer.init(params)
    batches = jax.random.randint(jax.random.PRNGKey(1), (1, BATCH, SEQ + 1), 0, config.n_vocab)
    times = []
    for i in range(steps + 1):
        start = time.perf_counter()
        params, opt_state, loss, _ = step(params, opt_state, batches, jnp.int32(i), frozen)
        loss.block_until_ready()
        times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"{np.median(times[1:]):.3f} {peak:.2f}")


def main(size: str, steps: int, rounds: int) -> None:
    print("| setting | size | trainable parameters | AdamW state | vs full |")
    print("| --- | --- | ---: | ---: | ---: |")
    for size in ("124M", "774M"):
        full = state_bytes(size, None)
        for name, lora in SETTINGS.items():
            count, nbytes = state_bytes(size, lora)
            print(f"| {name} | {size} | {count:,} | {nbytes / 2**20:,.1f} MiB | "
                  f"{nbytes / full[1]:.2%} |")  # fmt: skip
    measured: dict[str, list[tuple[float, float]]] = {name: [] for name in SETTINGS}
    for _ in range(rounds):
        for name in SETTINGS:
            child = [
                sys.executable,
                __file__,
                "--child",
                name,
                "--size",
                size,
                "--steps",
                str(steps),
            ]
            done = subprocess.run(child, capture_output=True, text=True)
            if done.returncode == -signal.SIGKILL:  # the kernel's out-of-memory killer, most likely
                continue
            done.check_returncode()
            out = done.stdout.split()
            measured[name].append((float(out[-2]), float(out[-1])))
    print(
        f"\n| setting ({size}, batch {BATCH} x {SEQ}, fp32) | step (s) | vs full | peak RSS (GiB) |"
    )
    print("| --- | ---: | ---: | ---: |")
    full_step = min((t for t, _ in measured["full"]), default=None)
    for name, runs in measured.items():
        if not runs:
            print(f"| {name} | killed (out of memory) | | |")
            continue
        step, peak = min(t for t, _ in runs), max(p for _, p in runs)
        ratio = f"{step / full_step:.2f}x" if full_step else ""
        print(f"| {name} | {step:.2f} | {ratio} | {peak:.2f} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", default="124M", choices=list(MODEL_SIZES), help="of the steps")
    parser.add_argument("--steps", type=int, default=6, help="timed steps after the first")
    parser.add_argument("--rounds", type=int, default=2, help="of the settings, alternated")
    parser.add_argument("--child", choices=list(SETTINGS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        time_steps(args.child, args.size, args.steps)
    else:
        main(args.size, args.steps, args.rounds)
