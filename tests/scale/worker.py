"""Scenarios that need several devices, run by `tests/scale` in a subprocess with 8 CPU devices.

XLA fixes the number of CPU devices when JAX starts, so the test process (one device) cannot host
them; `python -m tests.scale.worker SCENARIO ARGS_JSON` runs one scenario here and prints its JSON
result as the last line. Arrays go to `.npz` files under the scenario's `out` folder.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import jax
import numpy as np

from shared import params
from shared.distributed import mesh as mesh_lib
from shared.distributed import partition
from shared.training.config import TrainingConfig
from shared.training.trainer import Trainer

ONE_DEVICE = "data=1,fsdp=1"


def _devices(mesh: str | None) -> list | None:
    """The first device alone for a 1x1 mesh (all 8 otherwise)."""
    return jax.devices()[:1] if mesh == ONE_DEVICE else None


def _canonical(trainer: Trainer) -> dict:
    tree = trainer.backend.to_canonical(trainer.state.params, trainer.model_config)
    return {path: np.asarray(x) for path, x in params.flatten(tree).items()}


def steps(jobs: dict[str, dict], out: str) -> dict:
    """One training step per job ({name: config with its mesh}); canonical params after it to
    `out/<name>.npz`."""
    results = {}
    for name, config in jobs.items():
        trainer = Trainer(TrainingConfig(**config), devices=_devices(config["mesh"]))
        state = trainer.state
        state.params, state.opt_state, loss, grad_norm = trainer._train_step(
            state.params, state.opt_state, trainer.device_batches(0), 0
        )
        np.savez(Path(out) / f"{name}.npz", **_canonical(trainer))
        sizes = dict(trainer.mesh.shape)
        rules = partition.param_specs(trainer.backend, state.params, trainer.model_config, sizes)
        kept = jax.tree.map(lambda x, spec: x.sharding.spec == spec, state.params, rules)
        results[name] = {
            "loss": float(loss),
            "grad_norm": float(grad_norm),
            "specs": {
                path: str(spec)
                for path, spec in partition.canonical_specs(trainer.model_config, sizes).items()
            },
            "shardings_kept": all(jax.tree.leaves(kept)),
        }
    return results


def resume(config: dict, out: str, single_device_run: str) -> dict:
    """Save on 2x4 at step 2; continue to step 4 on 1x1 and on 8x1; continue the single-device
    run's checkpoint on 2x4."""
    out = Path(out)
    first = {**config, "out_dir": str(out / "2x4"), "max_iters": 2, "mesh": "data=2,fsdp=4"}
    Trainer(TrainingConfig(**first)).run()
    runs = {"2x4->1x1": ONE_DEVICE, "2x4->8x1": "data=8,fsdp=1", "1->2x4": "data=2,fsdp=4"}
    for name, mesh in runs.items():
        shutil.copytree(Path(single_device_run) if name == "1->2x4" else out / "2x4", out / name)
        resumed = {**config, "out_dir": str(out / name), "init_from": "resume", "mesh": mesh}
        Trainer(TrainingConfig(**resumed), devices=_devices(mesh)).run()
    return {"runs": list(runs)}


def generate(config: dict, prompts: list[list[int]], mesh: str, max_new_tokens: int) -> dict:
    """Greedy and sampled tokens and beam search hypotheses from unsharded and sharded
    generation."""
    from shared.backend import get_backend
    from shared.beam_search import BeamParams, search
    from shared.config import GPT2Config
    from shared.generation import Generator
    from shared.sampling import SamplingParams

    model_config = GPT2Config(**config)
    backend = get_backend("functional")
    tree = backend.init(model_config, jax.random.PRNGKey(0))
    results = {}
    for name, generator in (
        ("unsharded", Generator(backend, tree, model_config)),
        ("sharded", Generator(backend, tree, model_config, mesh=mesh_lib.make_mesh(mesh))),
    ):
        results[name] = {
            "greedy": [c.tokens for c in generator.generate(prompts, max_new_tokens)],
            "sampled": [
                c.tokens
                for c in generator.generate(
                    prompts, max_new_tokens, SamplingParams(temperature=1.0, top_k=20), seed=3
                )
            ],
            "beams": [
                [h.tokens for h in row]
                for row in search(generator, prompts, max_new_tokens, BeamParams(3, num_return=3))
            ],
            "param_specs": sorted(
                {str(getattr(x.sharding, "spec", None)) for x in jax.tree.leaves(generator.params)}
            ),
        }
    return results


def keras_fit_step(config: dict, mesh: str) -> dict:
    """GPT2LM logits and one `train_on_batch` (SGD) without a distribution and under `for_mesh`."""
    import keras

    from keras_impl import convert
    from keras_impl.distribution import for_mesh
    from keras_impl.model import GPT2LM
    from shared.config import GPT2Config

    model_config = GPT2Config(**config)
    tree = jax.tree.map(np.asarray, params.init_params(model_config, jax.random.PRNGKey(0)))
    tokens = np.random.RandomState(0).randint(0, model_config.n_vocab, (4, 9)).astype(np.int32)

    def run() -> tuple[np.ndarray, float, dict]:
        model = GPT2LM.from_canonical(tree, model_config)
        logits = np.asarray(model(tokens[:, :-1]))
        loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss=loss_fn)
        loss = float(model.train_on_batch(tokens[:, :-1], tokens[:, 1:]))
        weights = {convert.variable_path(model, v): v.value for v in model.trainable_variables}
        return logits, loss, weights

    plain_logits, plain_loss, plain = run()
    keras.distribution.set_distribution(for_mesh(mesh, model_config))
    logits, loss, weights = run()
    return {
        "logits": float(np.max(np.abs(logits - plain_logits))),
        "loss": abs(loss / plain_loss - 1),
        "weights": max(float(np.max(np.abs(weights[k] - plain[k]))) for k in plain),
        "specs": {k: str(v.sharding.spec) for k, v in weights.items()},
    }


SCENARIOS = {"steps": steps, "resume": resume, "generate": generate, "keras": keras_fit_step}


def main() -> None:
    scenario, args = sys.argv[1], json.loads(sys.argv[2])
    from shared import compilation_cache

    compilation_cache.enable()  # JAX_COMPILATION_CACHE_DIR: a folder the test session shares
    result = SCENARIOS[scenario](**args)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
