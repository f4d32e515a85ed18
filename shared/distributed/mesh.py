"""`--mesh data=D,fsdp=F`: the two named axes every device of a run is laid out on.

`data` splits the batch (each group of devices sees other rows); `fsdp` splits the parameters and
optimizer state (and, in training, the batch too: FSDP is data parallelism with sharded state).
The product must equal the run's device count; an axis left out takes what the other leaves.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence

import jax
from jax.sharding import AxisType, Mesh

from shared.errors import GPT2Error
from shared.jax_types import Device

DATA, FSDP = "data", "fsdp"
AXES = (DATA, FSDP)
_ENTRY = re.compile(r"^\s*([a-z_]+)\s*=\s*(\d+)\s*$", re.ASCII)


@dataclasses.dataclass(frozen=True)
class MeshSpec:
    """Axis sizes of the mesh: `data` x `fsdp` devices."""

    data: int = 1
    fsdp: int = 1

    @property
    def sizes(self) -> dict[str, int]:
        return {DATA: self.data, FSDP: self.fsdp}

    @property
    def n_devices(self) -> int:
        return self.data * self.fsdp

    def __str__(self) -> str:
        return f"data={self.data},fsdp={self.fsdp}"


def parse_axes(text: str) -> dict[str, int]:
    """The axis sizes written in `text` ("data=2,fsdp=4" or one of them), checked for syntax."""
    given: dict[str, int] = {}
    for entry in text.split(","):
        match = _ENTRY.match(entry)
        if not match or int(match[2]) < 1:
            raise GPT2Error(
                f"Bad mesh {text!r}: write it as data=D,fsdp=F with positive integers, "
                "e.g. data=2,fsdp=4."
            )
        if match[1] not in AXES or match[1] in given:
            raise GPT2Error(
                f"Bad mesh {text!r}: the axes are data and fsdp, each named once "
                "(e.g. data=2,fsdp=4)."
            )
        given[match[1]] = int(match[2])
    return given


def parse(text: str | None, n_devices: int) -> MeshSpec:
    """The mesh `text` ("data=2,fsdp=4", "fsdp=8", or None) describes for `n_devices` devices.

    None puts every device on `data`; an axis left out gets `n_devices` / the other.
    """
    if text is None or not text.strip():
        return MeshSpec(data=n_devices)
    given = parse_axes(text)
    if len(given) == 1:
        ((name, size),) = given.items()
        if n_devices % size:
            raise GPT2Error(
                f"Mesh {text!r} does not divide the {n_devices} devices of this run; give "
                f"{name} a divisor of {n_devices}."
            )
        given[FSDP if name == DATA else DATA] = n_devices // size
    spec = MeshSpec(**given)
    if spec.n_devices != n_devices:
        raise GPT2Error(
            f"Mesh {spec} spans {spec.n_devices} devices, but this run has {n_devices}; "
            f"data x fsdp must equal the device count (e.g. data={n_devices},fsdp=1)."
        )
    return spec


def check_batch_size(batch_size: int, spec: MeshSpec) -> None:
    """Training splits every batch over all devices (data and fsdp): it must divide evenly."""
    if batch_size % spec.n_devices:
        raise GPT2Error(
            f"batch_size {batch_size} does not split over the mesh {spec}, where each of the "
            f"{spec.n_devices} devices takes its own rows; use a multiple of {spec.n_devices}."
        )


def make_mesh(spec: str | MeshSpec | None = None, devices: Sequence[Device] | None = None) -> Mesh:
    """A `Mesh` of `devices` (default: every device of every process) with axes (data, fsdp).

    Axes are `Auto`: shardings are given to arrays and `jit` propagates them (GSPMD).
    """
    devices = list(jax.devices() if devices is None else devices)
    if not isinstance(spec, MeshSpec):
        spec = parse(spec, len(devices))
    elif spec.n_devices != len(devices):
        raise GPT2Error(
            f"Mesh {spec} spans {spec.n_devices} devices, but {len(devices)} were given."
        )
    return jax.make_mesh(
        (spec.data, spec.fsdp), AXES, axis_types=(AxisType.Auto,) * len(AXES), devices=devices
    )
