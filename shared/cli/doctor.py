"""`gpt2 doctor`: what a bug report needs: versions, devices, cache folders, downloaded sizes."""

from __future__ import annotations

import argparse
import platform
import sys
from importlib import metadata

PACKAGES = (
    "gpt2-jax", "jax", "jaxlib", "numpy", "tiktoken", "safetensors", "dm-haiku", "keras",
    "optax", "orbax-checkpoint", "chex", "tensorflow-cpu", "tensorflow",
)  # fmt: skip


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("doctor", help="print versions, devices and cache folders")
    parser.add_argument("--models-dir", "--models_dir", default=None)
    parser.set_defaults(run=run)


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def run(args: argparse.Namespace) -> int:
    import jax

    from shared import compilation_cache
    from shared.weights import openai

    print(f"python        {sys.version.split()[0]} ({platform.platform()})")
    for package in PACKAGES:
        print(f"{package:<14}{_version(package)}")
    print(f"devices       {', '.join(str(d) for d in jax.devices())}")
    print(f"models dir    {openai.models_dir(args.models_dir)}")
    print(f"downloaded    {', '.join(openai.downloaded_sizes(args.models_dir)) or 'none'}")
    print(f"xla cache     {compilation_cache.default_dir()}")
    return 0
