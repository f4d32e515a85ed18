"""Installed package versions, for reports, `gpt2 doctor` and the program cache's keys."""

from __future__ import annotations

from importlib import metadata


def installed_version(distribution: str) -> str | None:
    """The installed version of `distribution` (a pip name, such as dm-haiku), or None."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None
