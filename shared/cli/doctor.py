"""`gpt2 doctor`: what a bug report needs: versions, devices, cache folders, downloaded sizes.

With `--mesh data=D,fsdp=F` it also plans a training run on that mesh: the bytes per device of the
parameters and AdamW state of `--model-size`, split by the partition rules (computed from shapes,
so any machine can plan for any mesh).
"""

from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

from shared.cli import options
from shared.versions import installed_version

PACKAGES = (
    "gpt2-jax", "jax", "jaxlib", "numpy", "tiktoken", "safetensors", "dm-haiku", "keras",
    "optax", "orbax-checkpoint", "chex", "tensorflow-cpu", "tensorflow",
)  # fmt: skip
WIDTH = max(map(len, PACKAGES)) + 2


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("doctor", help="print versions, devices and cache folders")
    options.add_models_dir(parser)
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

    if args.mesh:  # a typo is reported before the report, not after it
        from shared.config import resolve_model_size
        from shared.distributed.mesh import parse_axes

        parse_axes(args.mesh)
        resolve_model_size(args.model_size)
    xla_cache = compilation_cache.folder()
    _line("python", f"{sys.version.split()[0]} ({platform.platform()})")
    for package in PACKAGES:
        _line(package, installed_version(package) or "not installed")
    try:
        devices = ", ".join(str(d) for d in jax.devices())
    except Exception as error:  # a broken CUDA or TPU install is what doctor is run to report
        devices = f"unavailable ({type(error).__name__}: {error})"
    _line("devices", devices)
    _line("models dir", openai.models_dir(args.models_dir))
    _line("downloaded", ", ".join(openai.downloaded_sizes(args.models_dir)) or "none")
    _line("xla cache", _folder_summary(xla_cache))
    _line("programs", _folder_summary(compilation_cache.programs_dir(xla_cache)))
    if args.mesh:
        _print_memory_plan(args.mesh, args.model_size)
    return 0


def _line(name: str, value: object) -> None:
    print(f"{name:<{WIDTH}}{value}")


def _folder_summary(path: Path) -> str:
    """`path` and what it holds, so a report shows whether a warm start had anything to reuse."""
    files = [f for f in path.rglob("*") if f.is_file()] if path.is_dir() else []
    if not files:
        return f"{path} (empty)"
    size = sum(f.stat().st_size for f in files)
    return f"{path} ({len(files)} files, {size / 1e6:.1f} MB)"


def _print_memory_plan(mesh_text: str, model_size: str) -> None:
    from shared.backend import get_backend
    from shared.config import config_for_size
    from shared.distributed import memory, mesh
    from shared.errors import GPT2Error
    from shared.training.config import TrainingConfig

    try:
        from shared.training.optimizer import make_optimizer
    except ImportError:
        raise GPT2Error(
            "The --mesh memory plan sizes AdamW's state with optax: pip install 'gpt2-jax[train]'."
        ) from None

    spec = mesh.MeshSpec(**mesh.parse_axes(mesh_text))
    plan = memory.report(
        get_backend("functional"),
        config_for_size(model_size),
        make_optimizer(TrainingConfig()),
        spec,
    )
    lines = plan.lines()
    _line("memory", f"{model_size} training state (fp32 params + AdamW): {lines[0]}")
    for line in lines[1:]:
        _line("", line)
