"""What a user waits for: a whole `gpt2 generate` process, from its start to its first token."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

PROMPT = "The meaning of life is"


def seconds_to_first_token(models_dir: Path, size: str = "124M") -> float:
    """Start `gpt2 generate` with weights already cached and time it until the first generated
    byte reaches its stdout (the prompt is echoed first, so that byte comes after it)."""
    command = [
        sys.executable, "-m", "gpt2", "generate", "--models-dir", str(models_dir),
        "--model-size", size, "--prompt", PROMPT, "--max-new-tokens", "8", "--seed", "0",
    ]  # fmt: skip
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout is not None  # stdout=PIPE
    received = b""
    while len(received) <= len(PROMPT.encode()):
        byte = process.stdout.read(1)
        if not byte:
            _, stderr = process.communicate()
            raise RuntimeError(f"gpt2 generate failed: {stderr.decode(errors='replace')[-500:]}")
        received += byte
    elapsed = time.perf_counter() - start
    process.communicate()
    return elapsed


def warm_start_seconds(models_dir: Path, size: str = "124M") -> tuple[float, float]:
    """(first run, best of two later runs): the first fills JAX's persistent compilation cache."""
    first = seconds_to_first_token(models_dir, size)
    return first, min(seconds_to_first_token(models_dir, size) for _ in range(2))
