"""Benchmark results and how they are written: a markdown table, a JSON file, a PNG plot."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any


@dataclasses.dataclass
class Result:
    """One measured figure. `group` and `backend` let the report sort and plot it."""

    group: str
    name: str
    value: float | None
    unit: str
    backend: str = ""
    note: str = ""


@dataclasses.dataclass
class Report:
    title: str
    machine: dict[str, Any]
    results: list[Result] = dataclasses.field(default_factory=list)
    on_add: Callable[[Result], None] | None = dataclasses.field(default=None, repr=False)

    def add(self, *results: Result) -> None:
        """Record results (and show each as it comes: a full run takes minutes)."""
        self.results.extend(results)
        if self.on_add is not None:
            for result in results:
                self.on_add(result)

    def value(self, group: str, name: str, backend: str = "") -> float | None:
        for result in self.results:
            if (result.group, result.name, result.backend) == (group, name, backend):
                return result.value
        return None

    def to_json(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "machine": self.machine,
            "results": [dataclasses.asdict(r) for r in self.results],
        }

    @classmethod
    def from_json(cls, payload: dict[str, Any]) -> Report:
        results = [Result(**r) for r in payload["results"]]
        return cls(payload["title"], payload["machine"], results)


def _format(value: float | None) -> str:
    if value is None:
        return "not reported"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def markdown(report: Report) -> str:
    """One table per group, the machine first: what a reader pastes into the README."""
    machine = ", ".join(f"{k}: {v}" for k, v in report.machine.items())
    lines = [f"**{report.title}**", "", f"Machine: {machine}"]
    groups = dict.fromkeys(r.group for r in report.results)
    for group in groups:
        lines += ["", f"*{group}*", "", "| measure | backend | value | unit | note |"]
        lines.append("| --- | --- | ---: | --- | --- |")
        lines += [
            f"| {r.name} | {r.backend or '-'} | {_format(r.value)} | {r.unit} | {r.note} |"
            for r in report.results
            if r.group == group
        ]
    return "\n".join(lines)


def write(report: Report, json_path: Path | None, markdown_path: Path | None) -> None:
    for path, text in (
        (json_path, json.dumps(report.to_json(), indent=2)),
        (markdown_path, markdown(report) + "\n"),
    ):
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)


def plot_decode_throughput(report: Report, path: Path) -> None:
    """Grouped bars: decode tokens/s by backend and batch size (the report's headline figure)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bars = [r for r in report.results if r.group == "generation" and r.unit == "tokens/s"]
    if not bars:
        raise ValueError("The report has no generation throughput to plot.")
    labels = list(dict.fromkeys(r.name for r in bars))
    backends = list(dict.fromkeys(r.backend for r in bars))
    width = 0.8 / len(backends)
    figure, axes = plt.subplots(figsize=(max(6, 1.6 * len(labels)), 4))
    for i, backend in enumerate(backends):
        values = [report.value("generation", label, backend) or 0 for label in labels]
        positions = [x + (i - (len(backends) - 1) / 2) * width for x in range(len(labels))]
        axes.bar(positions, values, width, label=backend)
    axes.set_xticks(range(len(labels)), labels, rotation=15, ha="right", fontsize=8)
    axes.set_ylabel("tokens/s")
    axes.set_yscale("log")
    axes.set_title(f"{report.title}\non {report.machine['device']}", fontsize=9)
    axes.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
