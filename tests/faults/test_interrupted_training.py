"""A training run killed at chosen points around its saves, then resumed, ends as the run that was
never interrupted: the same parameters bit for bit and the same metrics, each iteration once."""

from __future__ import annotations

import json
import re
import shutil
import signal
import struct

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from shared import data, params, weights
from shared.errors import GPT2Error
from shared.training import checkpoints
from shared.training.config import TrainingConfig
from shared.training.metrics import MetricsLog
from shared.weights import runs
from tests.faults.conftest import refused, run_gpt2
from tests.support import metrics
from tests.support.corpus import prepared_characters
from tests.support.paths import BPE_DIR, TINY_SHAKESPEARE

RUN = {"n-layer": 1, "n-head": 2, "n-embd": 16, "block-size": 16, "batch-size": 2,
       "gradient-accumulation-steps": 2, "dropout": 0.1, "max-iters": 16, "save-interval": 4,
       "eval-interval": 8, "eval-iters": 1, "log-interval": 1, "warmup-iters": 2,
       "keep-last": 10}  # fmt: skip
"""A tiny run whose batches, dropout masks and accumulation all have to resume exactly."""

TIMINGS = ("tok/s", "mfu")
"""Logged figures that measure the machine, not the run."""


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return prepared_characters(tmp_path_factory.mktemp("chars"), characters=20_000)


def train_args(data_dir, out_dir):
    return ["train", f"--data-dir={data_dir}", f"--out-dir={out_dir}",
            *(f"--{name}={value}" for name, value in RUN.items())]  # fmt: skip


@pytest.fixture(scope="module")
def straight(base_env, data_dir, tmp_path_factory):
    """The out_dir of the run trained without interruption."""
    out = tmp_path_factory.mktemp("straight") / "out"
    result = run_gpt2(base_env, *train_args(data_dir, out))
    assert result.returncode == 0, result.stderr
    return out


def interrupted(env, signum, where, step, *args):
    return run_gpt2(env, signal.Signals(signum).name, where, str(step), *args,
                    module="tests.support.interrupt")  # fmt: skip


def resume_args(out):
    return ["train", "--init-from=resume", f"--out-dir={out}"]


def saved_steps(out, which="checkpoints"):
    return sorted(int(p.name) for p in (out / which).iterdir() if p.name.isdigit())


def figures(out):
    return [{k: v for k, v in r.items() if k not in TIMINGS} for r in metrics.logged(out)]


@pytest.mark.slow
def test_kills_before_during_and_after_saves_lose_nothing(base_env, data_dir, straight, tmp_path):
    out = tmp_path / "out"
    # SIGKILL once save 4 is complete and iteration 5 logged: iteration 5 is logged again.
    result = interrupted(base_env, signal.SIGKILL, "after", 4, *train_args(data_dir, out))
    assert result.returncode == -signal.SIGKILL, result.stderr
    assert saved_steps(out) == [4] and metrics.logged_iters(out) == [1, 2, 3, 4, 5]

    # SIGKILL as save 8 is renamed into place: its folder stays unfinished.
    result = interrupted(base_env, signal.SIGKILL, "during", 8, *resume_args(out))
    assert result.returncode == -signal.SIGKILL, result.stderr
    assert f"resuming from step 4 (checkpoint {out}/checkpoints/4)" in result.stdout
    assert saved_steps(out) == [4] and (out / "checkpoints/8.orbax-checkpoint-tmp").is_dir()
    assert metrics.logged_iters(out) == list(range(1, 9))

    # SIGTERM as save 12 starts: the save completes, and the run stops with 128 + SIGTERM.
    result = interrupted(base_env, signal.SIGTERM, "before", 12, *resume_args(out))
    assert result.returncode == 128 + signal.SIGTERM, result.stderr
    assert result.stderr.count("orbax-checkpoint-tmp") == 1, result.stderr
    assert f"Removing {out}/checkpoints/8.orbax-checkpoint-tmp: a save that a stopped run left " \
        "unfinished" in result.stderr and "absl" not in result.stderr  # fmt: skip
    assert "stopped by SIGTERM at iter 12; saved; resume with --init-from resume" in result.stdout
    assert "done at" not in result.stdout
    assert saved_steps(out) == [4, 8, 12]

    # Ctrl-C between two saves: the run saves where it stopped, with 128 + SIGINT.
    result = interrupted(base_env, signal.SIGINT, "after", 12, *resume_args(out))
    assert result.returncode == 128 + signal.SIGINT, result.stderr
    assert "stopped by SIGINT at iter 13" in result.stdout
    assert saved_steps(out) == [4, 8, 12, 13]

    # A signal during the last save: the run is complete, so the status is 0.
    result = interrupted(base_env, signal.SIGTERM, "during", 16, *resume_args(out))
    assert result.returncode == 0, result.stderr
    assert "resuming from step 13" in result.stdout and "done at iter 16" in result.stdout

    assert figures(out) == figures(straight)
    (a, _, meta_a), (b, _, meta_b) = runs.load_for_inference(straight), runs.load_for_inference(out)
    assert meta_a["step"] == meta_b["step"] == 16
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)


@pytest.mark.slow
def test_a_killed_lora_run_resumes_to_the_adapters_of_the_run_never_killed(
    base_env, tiny_config, tmp_path
):
    """LoRA saves only the adapters and their AdamW state; a resume reads its base again."""
    tree = params.init_params(tiny_config, jax.random.PRNGKey(3))
    weights.save_hf(tree, tiny_config, tmp_path / "hf")
    (tmp_path / "text.txt").write_text(TINY_SHAKESPEARE.read_text()[:10_000])
    data.prepare([tmp_path / "text.txt"], tmp_path / "data", "gpt2", bpe_dir=BPE_DIR)
    lora = {**RUN, "max-iters": 8, "init-from": tmp_path / "hf", "lora-rank": 2,
            "lora-targets": "c_attn,c_fc"}  # fmt: skip
    args = [f"--{name}={value}" for name, value in lora.items()]

    def train(out, *extra):
        return ["train", f"--data-dir={tmp_path / 'data'}", f"--out-dir={out}", *args, *extra]

    assert run_gpt2(base_env, *train(tmp_path / "straight")).returncode == 0
    result = interrupted(base_env, signal.SIGKILL, "after", 4, *train(tmp_path / "out"))
    assert result.returncode == -signal.SIGKILL, result.stderr
    result = run_gpt2(base_env, *resume_args(tmp_path / "out"))
    assert result.returncode == 0 and "resuming from step 4" in result.stdout, result.stderr
    assert figures(tmp_path / "out") == figures(tmp_path / "straight")
    straight, resumed = (runs.load_for_inference(tmp_path / run) for run in ("straight", "out"))
    for x, y in zip(jax.tree.leaves(straight[0]), jax.tree.leaves(resumed[0]), strict=True):
        np.testing.assert_array_equal(x, y)


def events(folder):
    """The TensorBoard events in `folder`'s event files, read as TFRecords."""
    from tensorboardX.proto.event_pb2 import Event

    found = []
    for path in sorted(folder.glob("events.out.tfevents.*")):
        data, at = path.read_bytes(), 0
        while at < len(data):
            (length,) = struct.unpack_from("<Q", data, at)
            found.append(Event.FromString(data[at + 12 : at + 12 + length]))
            at += 12 + length + 4  # length, its CRC, the record, its CRC
    return found


def test_a_resumed_runs_logs_drop_what_the_killed_run_logged_past_its_checkpoint(tmp_path):
    config = TrainingConfig(out_dir=str(tmp_path), tensorboard=True)
    rows = [json.dumps({"iter": i, "train_loss": float(i)}) + "\n" for i in range(1, 9)]
    (tmp_path / "metrics.jsonl").write_text("".join(rows) + '{"iter": 9, "tra')  # killed mid-line
    log = MetricsLog(config, {}, start_step=4)
    log.write(5, {"train_loss": 0.5})
    log.close()
    assert metrics.logged(tmp_path)[3:] == [{"iter": 4, "train_loss": 4.0},
                                            {"iter": 5, "train_loss": 0.5}]  # fmt: skip
    purge = [e.step for e in events(tmp_path / "tensorboard") if e.HasField("session_log")]
    assert purge == [5]  # TensorBoard hides the earlier runs' events from step 5 on


@pytest.mark.slow
def test_a_checkpoint_holding_nan_is_refused_for_resuming_and_sampling(
    base_env, straight, tmp_path
):
    out = shutil.copytree(straight, tmp_path / "out")
    _, meta = runs.read_meta(out)
    restore_as_saved = ocp.args.Composite(state=ocp.args.StandardRestore())
    state = runs.restore(out, runs.LAST, 16, restore_as_saved)["state"]
    state["params"]["wte"] = np.array(state["params"]["wte"])
    state["params"]["wte"][3, 2] = np.nan
    store = checkpoints.Checkpoints(out, keep_last=10)
    store.save(16, state, meta)
    store.close()
    message = f"Parameter wte of checkpoint {out.resolve()}/checkpoints/16 holds " \
        "NaN or Inf values; delete that folder to go back to step 12, the newest one before it."  # fmt: skip
    refused(run_gpt2(base_env, *resume_args(out)), message)
    with pytest.raises(GPT2Error, match=re.escape(message)):  # what `generate --checkpoint` reads
        runs.load_for_inference(out)


@pytest.mark.slow
def test_a_truncated_checkpoint_is_one_sentence_naming_the_array(base_env, straight, tmp_path):
    out = shutil.copytree(straight, tmp_path / "out")
    for chunk in (out / "checkpoints/16/state").rglob("d/*"):
        chunk.write_bytes(chunk.read_bytes()[:20])
    result = run_gpt2(base_env, *resume_args(out))
    line = refused(
        result, f"Checkpoint {out.resolve()}/checkpoints/16 is damaged or incomplete (array "
    )
    assert line.endswith("; delete that folder to go back to step 12, the newest one before it.")
    assert "<" not in line and "tensorstore_spec" not in line  # no object reprs, no specs
