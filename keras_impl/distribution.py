"""`keras.distribution` for `GPT2LM`, from the same `--mesh` and partition rules as the shared trainer.

Keras places a model's variables itself when a distribution is set before the model is built:
`DataParallel` replicates them and splits each batch; `ModelParallel` lays every variable out by a
`LayoutMap` (variable path regex -> `TensorLayout`) and splits batches over one mesh axis. The
layouts here are the shared rules (`shared.distributed.partition`) written per Keras variable
path, so a Keras model is split exactly like the other backends' parameters.

One difference: Keras splits a batch over a single axis (`batch_dim_name="data"`), so on
`data=D,fsdp=F` the F devices of an fsdp group see the same rows (the shared trainer splits batches
over data and fsdp).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
from keras import distribution
from keras.distribution import DataParallel, ModelParallel

from keras_impl import convert
from shared import params
from shared.config import GPT2Config
from shared.distributed import mesh as mesh_lib
from shared.distributed import partition
from shared.jax_types import Device


def layout_map(config: GPT2Config, device_mesh: distribution.DeviceMesh) -> distribution.LayoutMap:
    """Every GPT2LM weight of `config` -> its layout under the shared partition rules."""
    sizes = dict(zip(device_mesh.axis_names, device_mesh.shape, strict=True))
    shapes = params.canonical_shapes(config)
    patterns = {
        **{rf"(.*/)?{path}": canonical for path, canonical in convert.TOP_LEVEL.items()},
        **{rf"(.*/)?h\d+/{path}": canonical for path, canonical in convert.PER_LAYER.items()},
    }
    layouts = distribution.LayoutMap(device_mesh)
    for pattern, canonical in patterns.items():
        axes, shape = partition.LOGICAL_AXES[canonical], shapes[canonical]
        if canonical.startswith("blocks/"):  # one layer of the stacked tensor
            axes, shape = axes[1:], shape[1:]
        spec = tuple(partition.spec_for(axes, shape, sizes))
        layouts[pattern] = spec + (None,) * (len(shape) - len(spec))
    return layouts


def for_mesh(
    mesh: str | None, config: GPT2Config, devices: Sequence[Device] | None = None
) -> DataParallel | ModelParallel:
    """The Keras distribution of `--mesh` (None: every device on data) for a `GPT2LM` of `config`.

    Example:

    ```python
    keras.distribution.set_distribution(for_mesh("data=2,fsdp=4", config))
    model = GPT2LM(config)  # variables laid out by the rules; model.fit splits batches over data
    ```
    """
    devices = list(jax.devices() if devices is None else devices)
    spec = mesh_lib.parse(mesh, len(devices))
    if spec.fsdp == 1:
        return distribution.DataParallel(devices=devices)
    device_mesh = distribution.DeviceMesh((spec.data, spec.fsdp), mesh_lib.AXES, devices)
    return distribution.ModelParallel(
        layout_map=layout_map(config, device_mesh), batch_dim_name=mesh_lib.DATA
    )
