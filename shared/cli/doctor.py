"""`gpt2 doctor`: what a bug report needs: versions, devices, cache folders, downloaded sizes.

With `--mesh data=D,fsdp=F` it also plans a training run on that mesh: the bytes per device of the
parameters and AdamW state of `--model-size`, split by the partition rules (computed from shapes,
so any machine can plan for any mesh).
"""

from __future__ import annotations

import argparse
import platform
import sys

from shared.versions import installed_version

PACKAGES = (
    "gpt2-jax", "jax", "jaxlib", "numpy", "tiktoken", "safetensors", "dm-haiku", "keras",
    "optax", "orbax-checkpoint", "chex", "tensorflow-cpu", "tensorflow",
)  # fmt: skip


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("doctor", help="print versions, devices and cache folders")
    parser.add_argument("--models-dir", "--models_dir", default=None)
    parser.add_argument(
        "--mesh", default=None, metavar="data=D,fsdp=F",
        help="also print the per-device memory of training --model-size on this mesh",
    )  # fmt: skip
    parser.add_argument(
        "--model-size", "--model_size", default="124M", help="the model the --mesh plan is for"
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import jax

    from shared import compilation_cache
    from shared.weights import openai

    print(f"python        {sys.version.split()[0]} ({platform.platform()})")
    for package in PACKAGES:
        print(f"{package:<14}{installed_version(package) or 'not installed'}")
    print(f"devices       {', '.join(str(d) for d in jax.devices())}")
    print(f"models dir    {openai.models_dir(args.models_dir)}")
    print(f"downloaded    {', '.join(openai.downloaded_sizes(args.models_dir)) or 'none'}")
    print(f"xla cache     {compilation_cache.default_dir()}")
    if args.mesh:
        _print_memory_plan(args.mesh, args.model_size)
    return 0


def _print_memory_plan(mesh_text: str, model_size: str) -> None:
    from shared.backend import get_backend
    from shared.config import config_for_size
    from shared.distributed import memory, mesh
    from shared.training.config import TrainingConfig
    from shared.training.optimizer import make_optimizer

    spec = mesh.MeshSpec(**mesh.parse_axes(mesh_text))
    plan = memory.report(
        get_backend("functional"),
        config_for_size(model_size),
        make_optimizer(TrainingConfig()),
        spec,
    )
    lines = plan.lines()
    print(f"memory        {model_size} training state (fp32 params + AdamW): {lines[0]}")
    for line in lines[1:]:
        print(f"              {line}")
