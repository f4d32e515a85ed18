"""A training run's `metrics.jsonl` as the tests read it: with `json`, not the library's reader."""

from __future__ import annotations

import json
from pathlib import Path


def logged(out_dir: str | Path) -> list[dict]:
    """Every record in the order written, a resumed run's repeated iterations included."""
    lines = (Path(out_dir) / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def logged_iters(out_dir: str | Path) -> list[int]:
    return [record["iter"] for record in logged(out_dir)]


def records(out_dir: str | Path) -> dict[int, dict]:
    """The records by iteration; of a repeated iteration, the last."""
    return {record["iter"]: record for record in logged(out_dir)}


def losses(out_dir: str | Path) -> dict[int, tuple[float, float | None]]:
    """(train loss, val loss or None) by iteration."""
    return {i: (r["train_loss"], r.get("val_loss")) for i, r in records(out_dir).items()}


def train_losses(out_dir: str | Path) -> dict[int, float]:
    return {i: r["train_loss"] for i, r in records(out_dir).items()}
