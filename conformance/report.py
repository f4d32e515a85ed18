"""The conformance report: every check's measured difference against its tolerance, per backend."""

from __future__ import annotations

import dataclasses
import datetime
import json
import platform
import warnings
from pathlib import Path

import jax
import numpy as np

from shared.errors import writing
from shared.versions import installed_version

PACKAGES = ("jax", "jaxlib", "dm-haiku", "keras", "optax", "numpy", "torch", "transformers")


@dataclasses.dataclass
class Row:
    check: str
    backend: str
    config: str
    max_diff: float
    tolerance: float
    passed: bool


def max_abs_diff(a: object, b: object) -> float:
    """Largest absolute difference between two arrays (or equal-structured trees of arrays)."""
    pairs = zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    return max(
        float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
        for x, y in pairs
    )


def max_rel_diff(a: object, b: object) -> float:
    """Largest per-tensor max|a - b| / max|b| over two equal-structured trees."""
    diffs = []
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        diffs.append(float(np.max(np.abs(x - y)) / max(np.max(np.abs(y)), 1e-30)))
    return max(diffs)


class Report:
    """Collects rows during a pytest session; `write` merges them into an existing report."""

    def __init__(self) -> None:
        self.rows: list[Row] = []

    def check(
        self, check: str, backend: str, config: str, max_diff: float, tolerance: float
    ) -> None:
        """Record one measurement and fail the test when it exceeds the tolerance."""
        passed = bool(max_diff <= tolerance)
        self.rows.append(Row(check, backend, config, float(max_diff), tolerance, passed))
        assert passed, f"{check} [{backend}, {config}]: {max_diff:.3g} > tolerance {tolerance:.3g}"

    def write(self, folder: str | Path) -> None:
        folder = Path(folder)
        path = folder / "conformance.json"
        rows = {(r.check, r.backend, r.config): r for r in self._load(path)}
        rows.update({(r.check, r.backend, r.config): r for r in self.rows})
        payload = {
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "device": f"{jax.devices()[0].device_kind} ({platform.machine()})",
            "python": platform.python_version(),
            "versions": {p: v for p in PACKAGES if (v := installed_version(p))},
            "rows": [dataclasses.asdict(r) for r in sorted(rows.values(), key=_order)],
        }
        with writing(f"the conformance report to {folder}", "give a writable folder"):
            folder.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(payload, indent=2) + "\n")
            (folder / "conformance.md").write_text(_markdown(payload))

    @staticmethod
    def _load(path: Path) -> list[Row]:
        """The rows of an earlier report, merged so a partial run (`-k haiku`) keeps the rest.

        An unreadable one is replaced, with a warning, rather than losing the run just made.
        """
        if not path.is_file():
            return []
        try:
            return [_row(record) for record in json.loads(path.read_text())["rows"]]
        except (OSError, ValueError, KeyError, TypeError) as error:
            warnings.warn(
                f"Ignoring the earlier report {path}, which cannot be read ({error!r}); "
                "writing a fresh one.",
                stacklevel=2,
            )
            return []


def _row(record: dict) -> Row:
    """A row of a report's JSON, its numbers checked: the markdown formats them."""
    return Row(
        str(record["check"]), str(record["backend"]), str(record["config"]),
        float(record["max_diff"]), float(record["tolerance"]), bool(record["passed"]),
    )  # fmt: skip


def _order(row: Row) -> tuple:
    return (row.check, row.config, row.backend)


def _markdown(payload: dict) -> str:
    versions = ", ".join(f"{k} {v}" for k, v in payload["versions"].items())
    lines = [
        "# Conformance report",
        "",
        f"Run {payload['date']} on {payload['device']}, Python {payload['python']}; {versions}.",
        "Every backend against the functional reference (and HF transformers for `oracle` rows), "
        "fp32, random weights from fixed seeds: GPT-2-initialised, or at a trained model's scale "
        "where a check names lively weights.",
        "",
        "| check | config | backend | max difference | tolerance | result |",
        "| --- | --- | --- | ---: | ---: | --- |",
    ]
    for row in payload["rows"]:
        result = "pass" if row["passed"] else "**FAIL**"
        lines.append(
            f"| {row['check']} | {row['config']} | {row['backend']} | {row['max_diff']:.2e} "
            f"| {row['tolerance']:.0e} | {result} |"
        )
    return "\n".join(lines) + "\n"
