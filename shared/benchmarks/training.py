"""Training-step speed: tokens/s and model FLOPs utilisation of the shared trainer's jitted step."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from shared import host_memory
from shared.backend import get_backend
from shared.benchmarks import profiling
from shared.config import GPT2Config, config_for_size
from shared.training.config import TrainingConfig
from shared.training.metrics import flops_per_token
from shared.training.optimizer import make_optimizer
from shared.training.step import make_train_step


def train_step_throughput(
    backend_name: str,
    model: str | GPT2Config,
    batch_size: int,
    block_size: int,
    compute_dtype: str,
    steps: int = 5,
    remat: bool = False,
    profile_dir: Path | None = None,
) -> dict[str, Any]:
    """Tokens/s of the train step of `model` (a size or a config) (best of `steps`), its compile
    time, FLOPs per token, and the temporary memory XLA planned for it (activations, gradients).

    The step is exactly the one `gpt2 train` runs: AdamW, clipping, donated buffers, `remat`,
    with the host memory settings of a training process. With `profile_dir`, two more steps
    are traced into it (`profiling.traced`).
    """
    host_memory.reuse_freed_memory()
    backend = get_backend(backend_name)
    config = config_for_size(model)
    training = TrainingConfig(
        block_size=block_size, batch_size=batch_size, compute_dtype=compute_dtype
    )
    optimizer = make_optimizer(training)
    params = jax.jit(lambda key: backend.init(config, key))(jax.random.PRNGKey(0))
    opt_state = jax.jit(optimizer.init)(params)
    step = make_train_step(backend, config, optimizer, compute_dtype, remat=remat)
    rng = np.random.default_rng(0)
    batches = jnp.asarray(rng.integers(0, config.n_vocab, (1, batch_size, block_size + 1)))
    start = time.perf_counter()
    compiled = step.lower(params, opt_state, batches, jnp.int32(0)).compile()
    compile_s = time.perf_counter() - start
    memory = compiled.memory_analysis()
    timings = []
    for i in range(steps + 1):
        start = time.perf_counter()
        params, opt_state, loss, _ = compiled(params, opt_state, batches, jnp.int32(i))
        jax.block_until_ready(loss)
        timings.append(time.perf_counter() - start)
    if profile_dir is not None:
        with profiling.traced(profile_dir, f"{backend_name}-train-step"):
            for i in range(2):
                params, opt_state, loss, _ = compiled(params, opt_state, batches, jnp.int32(i))
            jax.block_until_ready(loss)
    tokens = batch_size * block_size
    return {
        "tokens_per_s": tokens / min(timings[1:]),
        "compile_s": compile_s,
        "temp_bytes": getattr(memory, "temp_size_in_bytes", None),
        "flops_per_token": flops_per_token(
            config.n_params, config.n_layer, config.n_embd, block_size
        ),
    }
