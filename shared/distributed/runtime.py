"""Joining a multi-process run: `jax.distributed.initialize` from flags or environment variables.

One process per host (or per GPU); every process runs the same program, sees every device of the
run in `jax.devices()` and drives its own (`jax.local_devices()`). Must run before JAX does anything
else in the process.
"""

from __future__ import annotations

import os

import jax

from shared.errors import GPT2Error

ENV = {
    "coordinator": "JAX_COORDINATOR_ADDRESS",
    "num_processes": "JAX_NUM_PROCESSES",
    "process_id": "JAX_PROCESS_ID",
}
AUTO = "auto"
"""`--coordinator auto`: let JAX find the cluster (TPU pods, SLURM, Open MPI, Kubernetes...)."""


def settings(
    coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None
) -> dict:
    """The given values, each falling back to its environment variable (`ENV`), checked here
    since JAX would fail on a bad one with a traceback, or crash."""
    given = {"coordinator": coordinator, "num_processes": num_processes, "process_id": process_id}
    source = {name: f"--{name.replace('_', '-')}" for name in given}
    for name, variable in ENV.items():
        if given[name] is None and os.environ.get(variable):
            text, source[name] = os.environ[variable], variable
            given[name] = text if name == "coordinator" else _int(variable, text)
    address = given["coordinator"]
    if address not in (None, AUTO):
        host, colon, port = address.rpartition(":")
        if not (colon and host and port.isascii() and port.isdigit() and 0 < int(port) < 65536):
            raise GPT2Error(
                f"{source['coordinator']} must be HOST:PORT with a port in 1-65535 (e.g. "
                f"host0:1234), or {AUTO}, got {address!r}."
            )
    count, index = given["num_processes"], given["process_id"]
    if count is not None and count < 1:
        raise GPT2Error(f"{source['num_processes']} must be at least 1, got {count}.")
    if index is not None and not 0 <= index < (count or index + 1):
        raise GPT2Error(
            f"{source['process_id']} must be in [0, {count or 'the process count'}), got {index}."
        )
    return given


def initialize(
    coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None
) -> bool:
    """Join the multi-process run described by the arguments or the environment; True if joined.

    Nothing given (the single-process default): does nothing and returns False.
    """
    given = settings(coordinator, num_processes, process_id)
    if all(value is None for value in given.values()):
        return False
    if jax.distributed.is_initialized():
        return True
    if given["coordinator"] == AUTO:
        given["coordinator"] = None
    try:
        jax.distributed.initialize(
            coordinator_address=given["coordinator"],
            num_processes=given["num_processes"],
            process_id=given["process_id"],
        )
    except (RuntimeError, ValueError, TypeError) as error:
        raise GPT2Error(
            f"Could not join the multi-process run ({error}). Give every process --coordinator "
            "HOST:PORT (process 0's address), --num-processes N and its own --process-id I "
            f"(or {', '.join(ENV.values())}), or --coordinator auto on a TPU pod or a SLURM or "
            "MPI cluster, and start them before JAX is used in the process."
        ) from None
    return True


def is_primary() -> bool:
    """Process 0 writes what there should be one of (metrics, console lines)."""
    return jax.process_index() == 0


def _int(variable: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise GPT2Error(f"{variable} must be an integer, got {text!r}.") from None
