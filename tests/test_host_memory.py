"""`reuse_freed_memory`: a freed large block comes back as the same mapped pages, not fresh ones.

Each case runs in its own interpreter, since the setting changes the whole process.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

# Allocate, touch and free a 64 MB block five times; print the page faults of the last four.
PROGRAM = """
import ctypes, resource, sys
from shared import host_memory
applied = host_memory.reuse_freed_memory() if sys.argv[1] == "reuse" else None
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
size = 64 << 20

def touch_and_free():
    block = libc.malloc(size)
    ctypes.memset(block, 1, size)
    libc.free(block)

touch_and_free()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(4):
    touch_and_free()
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""
PAGES_PER_BLOCK = (64 << 20) // os.sysconf("SC_PAGE_SIZE")

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="glibc's malloc settings are Linux's"
)


def faults_over_four_blocks(mode: str, env: dict[str, str] | None = None) -> tuple[str, int]:
    result = subprocess.run(
        [sys.executable, "-c", PROGRAM, mode],
        capture_output=True, text=True, check=True, env={**os.environ, **(env or {})},
    )  # fmt: skip
    applied, faults = result.stdout.split()
    return applied, int(faults)


def test_freed_blocks_are_reused_without_page_faults() -> None:
    applied, faults = faults_over_four_blocks("reuse")
    assert applied == "True"
    assert faults < PAGES_PER_BLOCK // 10


def test_by_default_every_block_faults_in_fresh_pages() -> None:
    """The cost the setting removes: glibc maps and unmaps each large block."""
    _, faults = faults_over_four_blocks("default", {"GLIBC_TUNABLES": ""})
    assert faults > 3 * PAGES_PER_BLOCK


def test_the_users_own_malloc_tunables_are_left_alone() -> None:
    applied, faults = faults_over_four_blocks(
        "reuse", {"GLIBC_TUNABLES": "glibc.malloc.arena_test=8"}
    )
    assert applied == "False"
    assert faults > 3 * PAGES_PER_BLOCK
