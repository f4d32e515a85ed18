"""Traced programs kept on disk (`jax.export`), so a warm `gpt2` process skips tracing the model.

JAX's persistent compilation cache (`shared.compilation_cache`) skips XLA's compile, but each new
process still traces the model and lowers it to StableHLO, only to compute that cache's key, and
on CPU that is most of the wait before the first token and again before the decode loop. An
exported program is read back in milliseconds and lowered as one call (on CPU the first such
lowering also imports SciPy for JAX's LAPACK setup).

A program's file is named by a hash of everything its trace depends on: the function, its static
arguments, its arguments' structure, shapes and dtypes, the source of this library's packages, the
versions of the libraries that trace it, JAX's configuration and the device. An edited library or
an upgraded JAX therefore exports afresh instead of running a stale program, and a file that cannot
be read back (partial, corrupt) is exported again. Programs whose arguments span several devices
(a sharded Generator), and programs traced under `attention.pallas_decode_attention` (whose GPU
kernel `jax.export` does not serialize), are always traced.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax

from shared.atomic import atomic_path
from shared.attention import pallas_decode_attention_enabled
from shared.backend import Backend, backend_packages
from shared.versions import installed_version

PACKAGES = ("shared", *backend_packages())
TRACING_LIBRARIES = ("jax", "jaxlib", "dm-haiku", "keras", "numpy")

_directory: Path | None = None
_programs: dict[tuple, Callable[..., Any]] = {}


def _name(function: jax.stages.Wrapped, attribute: str = "__name__") -> str:
    """The `__name__` (or `__qualname__`) that `jax.jit` keeps of the function it wraps; its
    type does not declare them."""
    return getattr(function, attribute)


def enable(directory: str | Path) -> None:
    """Keep exported programs in `directory` (created when the first one is written)."""
    global _directory
    _directory = Path(directory)
    _programs.clear()


def disable() -> None:
    """Trace every program again, as plain `jax.jit` does."""
    global _directory
    _directory = None
    _programs.clear()


def call(
    function: jax.stages.Wrapped,
    args: Sequence[Any],
    static: dict[str, Any],
    *,
    donate_argnums: tuple[int, ...] = (),
) -> Any:
    """`function(*args, **static)` for a `jax.jit` function, through the cache when it is enabled."""
    return bind(function, args, static, donate_argnums=donate_argnums)(*args)


def bind(
    function: jax.stages.Wrapped,
    args: Sequence[Any],
    static: dict[str, Any],
    *,
    donate_argnums: tuple[int, ...] = (),
) -> Callable[..., Any]:
    """`function` with its `static` arguments bound, for arguments of the types of `args`.

    With the cache on, this is the exported program, read from the cache folder or exported into
    it, under a new `jax.jit` that donates `donate_argnums` (the function's own donations). Bind
    once and call many times: finding the program flattens and types every argument each time.
    """
    if _directory is None or pallas_decode_attention_enabled():
        return functools.partial(function, **static)
    leaves, treedef = jax.tree.flatten(tuple(args))
    if any(isinstance(x, jax.Array) and x.sharding.num_devices > 1 for x in leaves):
        return functools.partial(function, **static)
    types = tuple(map(jax.typeof, leaves))
    settings = _jax_settings()  # changeable at any time, so part of the in-memory key too
    signature = (function, tuple(sorted(static.items())), treedef, types, settings)
    program = _programs.get(signature)
    if program is None:
        key = _file_key(function, static, treedef, types, settings)
        program = _programs[signature] = _load_or_export(
            _directory / f"{_name(function)}-{key}.exported", function, args, static,
            donate_argnums,
        )  # fmt: skip
    return program


def _load_or_export(
    path: Path,
    function: jax.stages.Wrapped,
    args: Sequence[Any],
    static: dict[str, Any],
    donate_argnums: tuple[int, ...],
) -> Callable[..., Any]:
    """The program kept at `path` under `jax.jit`, else `function` exported there.

    A kept program is lowered before it is returned: a damaged file can deserialize and still
    hold a module that fails to load, which would otherwise fail every later run at its call.
    """
    if path.is_file():
        with contextlib.suppress(Exception):  # a partial or corrupt file is exported again
            exported = jax.export.deserialize(bytearray(path.read_bytes()))
            program = jax.jit(exported.call, donate_argnums=donate_argnums)
            program.lower(*args)
            return program
    exported = jax.export.export(function)(*args, **static)
    with contextlib.suppress(OSError), atomic_path(path) as tmp:  # a read-only cache is only read
        tmp.write_bytes(exported.serialize())
    return jax.jit(exported.call, donate_argnums=donate_argnums)


def _jax_settings() -> str:
    return repr(sorted(jax.config.values.items()))


def _file_key(
    function: jax.stages.Wrapped,
    static: dict[str, Any],
    treedef: Any,
    types: tuple,
    settings: str,
) -> str:
    """A hash of what the trace depends on; static values by name (backends) or repr (configs)."""
    static_text = sorted(
        (name, value.name if isinstance(value, Backend) else repr(value))
        for name, value in static.items()
    )
    parts = [
        _environment(),
        settings,
        f"{function.__module__}.{_name(function, '__qualname__')}",
        repr(static_text),
        str(treedef),
        *map(str, types),
    ]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


@functools.cache
def _environment() -> str:
    """This library's source, the tracing libraries' versions and the device."""
    digest = hashlib.sha256()
    for package in PACKAGES:
        spec = importlib.util.find_spec(package)
        for folder in (spec.submodule_search_locations or ()) if spec else ():
            for source in sorted(Path(folder).rglob("*.py")):
                digest.update(str(source.relative_to(folder)).encode() + source.read_bytes())
    device = jax.devices()[0]
    return "\n".join(
        [
            digest.hexdigest(),
            *(f"{name} {installed_version(name)}" for name in TRACING_LIBRARIES),
            f"{device.platform} {device.device_kind} {device.client.platform_version}",
        ]
    )
