"""Several processes form one run through `jax.distributed`: two on 127.0.0.1 train like one."""

from __future__ import annotations

import re
import socket
import subprocess
import sys

import pytest

from shared.distributed import runtime
from shared.errors import GPT2Error
from shared.training.config import TrainingConfig
from shared.training.trainer import Trainer
from tests.support import metrics
from tests.support.paths import REPO_ROOT

RUN = {"n_layer": 1, "n_head": 2, "n_embd": 16, "block_size": 16, "batch_size": 8,
       "learning_rate": 1e-4, "min_lr": 1e-5, "warmup_iters": 0, "max_iters": 5,
       "log_interval": 1, "eval_interval": 5, "eval_iters": 1, "save_interval": 5}  # fmt: skip


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_two_processes_train_five_steps_to_the_loss_of_one(char_data, tmp_path, worker_env):
    config = TrainingConfig(data_dir=str(char_data), out_dir=str(tmp_path / "one"), **RUN)
    Trainer(config).run()
    flags = [
        f"--{k}={v}" for k, v in {**RUN, "data_dir": char_data, "out_dir": tmp_path / "two"}.items()
    ]
    coordinator = f"127.0.0.1:{_free_port()}"
    env = {k: v for k, v in worker_env.items() if k != "XLA_FLAGS"}  # one CPU device each
    command = [sys.executable, "-m", "gpt2", "train", *flags, "--mesh", "data=1,fsdp=2",
               "--coordinator", coordinator, "--num-processes", "2"]  # fmt: skip
    logs = [(tmp_path / f"process{i}.log").open("w+") for i in range(2)]
    processes = [
        subprocess.Popen(
            [*command, "--process-id", str(i)],
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # files, not pipes: neither process may block on output the test has not read yet
        for i, log in enumerate(logs)
    ]
    try:
        for process, log in zip(processes, logs, strict=True):
            process.wait(timeout=300)
            log.seek(0)
            assert process.returncode == 0, log.read()[-5000:]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    one, two = metrics.train_losses(tmp_path / "one"), metrics.train_losses(tmp_path / "two")
    assert sorted(two) == [1, 2, 3, 4, 5]
    assert max(abs(two[i] / one[i] - 1) for i in one) <= 1e-5


@pytest.mark.parametrize(
    ("given", "env", "message"),
    [
        ({"coordinator": "127.0.0.1", "num_processes": 1}, {},
         "--coordinator must be HOST:PORT with a port in 1-65535 (e.g. host0:1234), or auto, got "
         "'127.0.0.1'."),
        ({"coordinator": "127.0.0.1:notaport"}, {}, "got '127.0.0.1:notaport'."),
        ({"coordinator": ":1234"}, {}, "got ':1234'."),
        ({}, {"JAX_COORDINATOR_ADDRESS": "host0"}, "JAX_COORDINATOR_ADDRESS must be HOST:PORT"),
        ({"num_processes": 0}, {}, "--num-processes must be at least 1, got 0."),
        ({"num_processes": 2, "process_id": 5}, {}, "--process-id must be in [0, 2), got 5."),
        ({"num_processes": 2}, {"JAX_PROCESS_ID": "-1"}, "JAX_PROCESS_ID must be in [0, 2), got -1."),
    ],
)  # fmt: skip
def test_bad_process_settings_fail_in_one_sentence_before_jax_sees_them(
    given, env, message, monkeypatch
):
    for variable in runtime.ENV.values():
        monkeypatch.delenv(variable, raising=False)
    for variable, value in env.items():
        monkeypatch.setenv(variable, value)
    with pytest.raises(GPT2Error, match=re.escape(message)):
        runtime.initialize(**given)
    with pytest.raises(GPT2Error, match=re.escape(message)):
        TrainingConfig(**given)


def test_good_process_settings_pass(monkeypatch):
    for variable in runtime.ENV.values():
        monkeypatch.delenv(variable, raising=False)
    expected = {"coordinator": "[::1]:1234", "num_processes": 2, "process_id": 1}
    assert runtime.settings(**expected) == expected
    assert runtime.settings("auto")["coordinator"] == "auto"
