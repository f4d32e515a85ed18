"""Sharded training is single-device training: one step on every mesh gives the same loss and
parameters, and checkpoints move between meshes and one device without changing the run."""

from __future__ import annotations

import functools
import importlib.util
import shutil

import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from shared import params
from shared.training.config import TrainingConfig
from shared.training.trainer import Trainer
from shared.weights import runs
from tests.support import metrics

TOLERANCE = 1e-5
TINY = {"n_layer": 1, "n_head": 2, "block_size": 16, "batch_size": 8,
        "gradient_accumulation_steps": 2, "learning_rate": 1e-4, "min_lr": 1e-5,
        "warmup_iters": 0, "lr_decay_iters": 10, "max_iters": 1, "eval_iters": 1}  # fmt: skip
CONFIGS = {
    "dividing": {**TINY, "n_embd": 16},  # every tensor splits over fsdp=8 and fsdp=4
    "non-dividing": {**TINY, "n_embd": 10},  # embed 10, qkv 30 and vocab 65 split over neither
}
MESHES = {
    "dividing": ["data=1,fsdp=1", "data=8,fsdp=1", "data=1,fsdp=8", "data=2,fsdp=4"],
    # Only fsdp splits parameters, so only fsdp meshes meet a shape that does not divide.
    "non-dividing": ["data=1,fsdp=8", "data=2,fsdp=4"],
}
CASES = [(name, mesh, "functional") for name, meshes in MESHES.items() for mesh in meshes]
CASES.append(("dividing", "data=2,fsdp=4", "haiku"))


def max_rel_diff(got: dict, expected: dict, n_embd: int) -> float:
    """Largest per-tensor max|a - b| / max|b|, without the key part of c_attn's bias.

    That part has an exactly zero gradient (softmax ignores a constant added to every score), so
    Adam turns its rounding noise, which differs with any change of summation order, into +-lr
    steps (as in conformance/test_training.py).
    """
    diffs = []
    for path, b in expected.items():
        a = got[path]
        if path == "blocks/attn/c_attn/b":
            keep = np.r_[0:n_embd, 2 * n_embd : 3 * n_embd]
            a, b = a[..., keep], b[..., keep]
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        diffs.append(float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30)))
    return max(diffs)


def _config(data_dir, out_dir, /, **values) -> TrainingConfig:
    return TrainingConfig(data_dir=str(data_dir), out_dir=str(out_dir), **values)


def _case(config_name: str, mesh: str, backend: str) -> str:
    return f"{config_name}-{mesh}-{backend}"


@pytest.fixture(scope="module")
def sharded_steps(char_data, tmp_path_factory, on_eight_devices):
    """`sharded_steps()` -> ({case: result}, folder of `<case>.npz` params): one step of every
    case on 8 devices, started at once in the background and awaited on first use."""
    out = tmp_path_factory.mktemp("steps")
    common = {"data_dir": str(char_data), "out_dir": str(out)}
    jobs = {
        _case(name, mesh, backend): {**CONFIGS[name], **common, "mesh": mesh, "backend": backend}
        for name, mesh, backend in CASES
        if backend == "functional" or importlib.util.find_spec(backend)
    }
    scenario = on_eight_devices("steps", jobs=jobs, out=str(out))
    return functools.cache(lambda: (scenario.result(), out))


@pytest.fixture(scope="module")
def single_device_step(char_data, tmp_path_factory):
    """`single_device_step(name, backend)` -> (loss, canonical params) after one step on this
    process' one device, without a mesh: the plain path."""

    @functools.cache
    def run(name: str, backend: str) -> tuple[float, dict]:
        folder = tmp_path_factory.mktemp("one")
        trainer = Trainer(_config(char_data, folder, **CONFIGS[name], backend=backend))
        state = trainer.state
        state.params, state.opt_state, loss, _ = trainer._train_step(
            state.params, state.opt_state, trainer.device_batches(0), 0
        )
        tree = trainer.backend.to_canonical(state.params, trainer.model_config)
        return float(loss), {k: np.asarray(v) for k, v in params.flatten(tree).items()}

    return run


@pytest.mark.parametrize(("config_name", "mesh", "backend"), CASES)
def test_a_sharded_step_equals_the_single_device_step(
    config_name, mesh, backend, sharded_steps, single_device_step
):
    if backend != "functional":
        pytest.importorskip(backend)
    loss, expected = single_device_step(config_name, backend)
    results, folder = sharded_steps()
    case = _case(config_name, mesh, backend)
    got = dict(np.load(folder / f"{case}.npz"))
    assert abs(results[case]["loss"] / loss - 1) <= TOLERANCE
    assert max_rel_diff(got, expected, CONFIGS[config_name]["n_embd"]) <= TOLERANCE


def test_the_step_keeps_every_tensor_on_its_rule_sharding(sharded_steps):
    results, _ = sharded_steps()
    assert all(result["shardings_kept"] for result in results.values())


def test_tensors_that_divide_split_over_fsdp_along_their_largest_axis(sharded_steps):
    specs = sharded_steps()[0][_case("dividing", "data=1,fsdp=8", "functional")]["specs"]
    assert specs["blocks/mlp/c_fc/w"] == str(P(None, None, "fsdp"))  # mlp
    assert specs["blocks/mlp/c_proj/w"] == str(P(None, "fsdp"))  # mlp
    assert specs["blocks/attn/c_attn/w"] == str(P(None, None, "fsdp"))  # qkv
    assert specs["wte"] == str(P(None, "fsdp"))  # vocab 65 does not divide: embed


def test_tensors_that_do_not_divide_the_fsdp_axis_are_replicated(sharded_steps):
    specs = sharded_steps()[0][_case("non-dividing", "data=1,fsdp=8", "functional")]["specs"]
    for path in ("wte", "blocks/attn/c_attn/w", "blocks/attn/c_proj/w", "ln_f/g"):
        assert specs[path] == str(P()), path
    assert specs["blocks/mlp/c_fc/w"] == str(P(None, None, "fsdp"))  # mlp 40 divides


# -- checkpoints across meshes ------------------------------------------------------------------

RESUME = {**CONFIGS["dividing"], "max_iters": 4, "save_interval": 2, "eval_interval": 2,
          "log_interval": 1}  # fmt: skip
RESUMED_RUNS = ["2x4->1x1", "2x4->8x1", "1->2x4"]
"""Saved on 2x4 at iter 2, continued on a 1x1 and an 8x1 mesh; saved on one device (no mesh),
continued on 2x4. Each result is then read back onto this process' single device."""


def _final_params(out_dir) -> tuple[int, dict]:
    tree, _, meta = runs.load_for_inference(out_dir)
    return meta["step"], {k: np.asarray(v) for k, v in params.flatten(tree).items()}


@pytest.fixture(scope="module")
def resumed_runs(char_data, tmp_path_factory, on_eight_devices):
    """The folder of the uninterrupted single-device run (`straight`) and of every resumed run."""
    out = tmp_path_factory.mktemp("resume")
    Trainer(_config(char_data, out / "straight", **RESUME)).run()
    # The straight run as it was at iter 2, its checkpoint there and its metrics up to there.
    shutil.copytree(out / "straight", out / "1", ignore=shutil.ignore_patterns("4", "best"))
    lines = (out / "1" / "metrics.jsonl").read_text().splitlines()
    (out / "1" / "metrics.jsonl").write_text("".join(f"{line}\n" for line in lines[:2]))
    config = {**RESUME, "data_dir": str(char_data)}
    on_eight_devices(
        "resume", config=config, out=str(out), single_device_run=str(out / "1")
    ).result()
    return out


@pytest.mark.parametrize("run", RESUMED_RUNS)
def test_a_checkpoint_continues_on_another_mesh_as_if_uninterrupted(run, resumed_runs):
    straight_step, straight = _final_params(resumed_runs / "straight")
    step, resumed = _final_params(resumed_runs / run)
    assert step == straight_step == 4
    assert max_rel_diff(resumed, straight, RESUME["n_embd"]) <= TOLERANCE
    expected, got = (
        metrics.train_losses(resumed_runs / "straight"),
        metrics.train_losses(resumed_runs / run),
    )
    assert sorted(got) == [1, 2, 3, 4]
    assert max(abs(got[i] / expected[i] - 1) for i in got) <= TOLERANCE
