"""Loss and learning-rate curves of training runs, drawn from their `metrics.jsonl` into a PNG.

Several runs overlay in one figure (labelled by folder name), e.g. one run per backend. Drawn with
matplotlib's Agg canvas directly, so it needs no display and changes no global matplotlib state.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from shared.errors import GPT2Error, writing
from shared.numeric import is_real

if TYPE_CHECKING:
    from matplotlib.figure import Figure

METRICS_FILE = "metrics.jsonl"


def read_metrics(run_dir: str | Path) -> list[dict]:
    """The logged records of a run, one per iteration in order (a resumed run's repeats: the last).

    Raises GPT2Error when the folder has no metrics file, it is empty, or a line is not JSON.
    """
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        raise GPT2Error(
            f"No {METRICS_FILE} in {run_dir}; give the --out-dir of a `gpt2 train` run."
        )
    by_iter = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            step = int(record["iter"])
        except (ValueError, KeyError, TypeError, OverflowError):
            raise GPT2Error(
                f"Line {number} of {path} is not a metrics record (JSON with an 'iter')."
            ) from None
        by_iter[step] = record | {"iter": step}
    if not by_iter:
        raise GPT2Error(f"{path} is empty: the run has not logged an iteration yet.")
    return [by_iter[step] for step in sorted(by_iter)]


def _series(records: list[dict], name: str) -> tuple[list[int], list[float]]:
    """The iterations where `name` was logged as a finite number (a diverged run logs NaN)."""
    points = [(r["iter"], r[name]) for r in records if _finite(r.get(name))]
    return [step for step, _ in points], [value for _, value in points]


def _finite(value: object) -> bool:
    return is_real(value) and math.isfinite(value)


def _labels(run_dirs: Sequence[str | Path]) -> list[str]:
    """Folder names, or the paths as given where two runs share a name."""
    names = [Path(d).resolve().name for d in run_dirs]
    return [
        name if names.count(name) == 1 else str(d) for name, d in zip(names, run_dirs, strict=True)
    ]


def plot_runs(run_dirs: Sequence[str | Path], output: str | Path | None = None) -> Path:
    """Draw train/val loss and learning rate against iteration for each run; returns the PNG path.

    Args:
        run_dirs: `--out-dir` folders of `gpt2 train` runs, overlaid in one figure.
        output: the PNG to write; default `loss.png` in the first run's folder.
    """
    figure = draw_runs(run_dirs)
    path = Path(output) if output is not None else Path(run_dirs[0]) / "loss.png"
    with writing(f"the plot to {path}", "give a file path in a writable folder"):
        path.parent.mkdir(parents=True, exist_ok=True)
        # The path as given: without a suffix matplotlib would write `path.png` instead.
        figure.savefig(path, dpi=120, format=None if path.suffix else "png")
    return path


def draw_runs(run_dirs: Sequence[str | Path]) -> Figure:
    """The figure `plot_runs` saves: loss and learning-rate axes, three lines per run in its own
    color (train loss, val loss, lr), labelled by folder name; to show in a notebook or restyle."""
    if not run_dirs:
        raise GPT2Error("Give at least one run folder to plot.")
    runs = [read_metrics(d) for d in run_dirs]  # every error before matplotlib is imported
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise GPT2Error("Plotting needs matplotlib: pip install 'gpt2-jax[train]'.") from None

    figure = Figure(figsize=(10, 4), layout="constrained")
    FigureCanvasAgg(figure)
    loss_axes, lr_axes = figure.subplots(1, 2)
    for index, (label, records) in enumerate(zip(_labels(run_dirs), runs, strict=True)):
        color = f"C{index % 10}"
        loss_axes.plot(*_series(records, "train_loss"), color=color, label=f"{label} train")
        val_iters, val_losses = _series(records, "val_loss")
        if val_iters:
            loss_axes.plot(val_iters, val_losses, "o--", color=color, label=f"{label} val")
        lr_axes.plot(*_series(records, "lr"), color=color, label=label)
    loss_axes.set(title="loss", xlabel="iter", ylabel="cross-entropy")
    lr_axes.set(title="learning rate", xlabel="iter", ylabel="lr")
    lr_axes.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    for axes in (loss_axes, lr_axes):
        axes.grid(alpha=0.3)
        axes.legend(fontsize="small")
    return figure
