"""Fixtures of the scale tests: prepared character data, and a runner for scenarios on 8 devices.

Scenarios needing several devices run in a subprocess (`tests.scale.worker`) started with
`XLA_FLAGS=--xla_force_host_platform_device_count=8`: XLA reads the flag once, when JAX starts, so
setting it for the whole suite would put every other test on 8 devices (and change what the
trainer's default mesh is there). The subprocesses share one compilation cache.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.corpus import prepared_characters
from tests.support.paths import REPO_ROOT

EIGHT_DEVICES = "--xla_force_host_platform_device_count=8"


@pytest.fixture(scope="session")
def char_data(tmp_path_factory) -> Path:
    return prepared_characters(tmp_path_factory.mktemp("scale_char"))


@pytest.fixture(scope="session")
def worker_env(tmp_path_factory) -> dict:
    """The environment of 8-device subprocesses (CPU only, a compilation cache of their own)."""
    return {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} {EIGHT_DEVICES}".strip(),
        "JAX_COMPILATION_CACHE_DIR": str(tmp_path_factory.mktemp("xla_cache")),
        "TF_CPP_MIN_LOG_LEVEL": "3",
    }


class Scenario:
    """A worker scenario running in the background; `result()` waits for its JSON result."""

    def __init__(self, env: dict, scenario: str, args: dict) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.scale.worker", scenario, json.dumps(args)],
            cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip

    def result(self) -> dict:
        try:
            stdout, stderr = self.process.communicate(timeout=600)
        finally:
            if self.process.poll() is None:
                self.process.kill()
        assert self.process.returncode == 0, stderr[-5000:]
        return json.loads(stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def on_eight_devices(worker_env):
    """`on_eight_devices(scenario, **args)` starts the scenario on 8 CPU devices (in the
    background: the test process can compute its single-device reference meanwhile) and returns
    a `Scenario`; `.result()` is its JSON result."""
    return lambda scenario, **args: Scenario(worker_env, scenario, args)
