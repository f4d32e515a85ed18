"""`gpt2 plot`: loss and lr curves of training runs as a PNG, and one-sentence errors."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from shared.cli import main
from shared.training.plot import draw_runs, read_metrics
from tests.support import metrics

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _write_metrics(folder, n_iters=20, val_every=5):
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for step in range(1, n_iters + 1):
        record = {"iter": step, "train_loss": 4.0 - 0.1 * step, "lr": 1e-3 * min(1, step / 5),
                  "grad_norm": 1.0, "tok/s": 1000.0}  # fmt: skip
        if step % val_every == 0:
            record["val_loss"] = 4.1 - 0.1 * step
        lines.append(json.dumps(record))
    (folder / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def test_a_run_is_drawn_to_loss_png_in_its_folder(tmp_path, capsys):
    run = _write_metrics(tmp_path / "out")
    assert main(["plot", str(run)]) == 0
    assert (run / "loss.png").read_bytes().startswith(PNG_MAGIC)
    assert capsys.readouterr().out.strip() == str(run / "loss.png")


def _lines(axes):
    """{label: (x, y, color)} of the lines drawn on `axes`."""
    return {
        line.get_label(): (list(line.get_xdata()), list(line.get_ydata()), line.get_color())
        for line in axes.get_lines()
    }


def test_several_runs_overlay_into_the_given_output(tmp_path):
    """Each run's train loss, val loss and lr, as logged in its metrics.jsonl, are one line each,
    labelled by folder name, one color per run."""
    runs = [
        _write_metrics(tmp_path / name, n_iters=n) for name, n in [("haiku", 10), ("keras", 20)]
    ]
    (runs[1] / "metrics.jsonl").write_text(  # the runs must not look alike
        "".join(
            json.dumps(r | {"train_loss": 2 * r["train_loss"], "lr": r["lr"] / 4}) + "\n"
            for r in metrics.logged(runs[1])
        )
    )
    output = tmp_path / "plots" / "compare.png"
    assert main(["plot", *map(str, runs), "--output", str(output)]) == 0
    assert output.read_bytes().startswith(PNG_MAGIC)
    assert not (runs[0] / "loss.png").exists()

    figure = draw_runs(runs)  # what was saved
    loss_axes, lr_axes = figure.axes
    assert (loss_axes.get_title(), lr_axes.get_title()) == ("loss", "learning rate")
    expected_loss, expected_lr = {}, {}
    for run in runs:
        records = metrics.logged(run)
        val = [r for r in records if "val_loss" in r]
        expected_loss[f"{run.name} train"] = (
            [r["iter"] for r in records],
            [r["train_loss"] for r in records],
        )
        expected_loss[f"{run.name} val"] = ([r["iter"] for r in val], [r["val_loss"] for r in val])
        expected_lr[run.name] = ([r["iter"] for r in records], [r["lr"] for r in records])
    loss_lines, lr_lines = _lines(loss_axes), _lines(lr_axes)
    assert {k: v[:2] for k, v in loss_lines.items()} == expected_loss
    assert {k: v[:2] for k, v in lr_lines.items()} == expected_lr
    assert len(loss_axes.get_lines()) == 4 and len(lr_axes.get_lines()) == 2
    for name in ("haiku", "keras"):  # a run's three lines share its color, the runs' differ
        assert loss_lines[f"{name} train"][2] == loss_lines[f"{name} val"][2] == lr_lines[name][2]
    assert lr_lines["haiku"][2] != lr_lines["keras"][2]
    legends = [[t.get_text() for t in axes.get_legend().get_texts()] for axes in figure.axes]
    assert legends == [["haiku train", "haiku val", "keras train", "keras val"], ["haiku", "keras"]]


def test_a_resumed_runs_repeated_iterations_keep_the_last_record(tmp_path):
    run = _write_metrics(tmp_path / "out", n_iters=4)
    with (run / "metrics.jsonl").open("a") as handle:
        handle.write(json.dumps({"iter": 3, "train_loss": 9.0, "lr": 0.0}) + "\n")
    records = read_metrics(run)
    assert [r["iter"] for r in records] == [1, 2, 3, 4]
    assert records[2]["train_loss"] == 9.0


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, r"No metrics.jsonl in .*; give the --out-dir of a `gpt2 train` run."),
        ("", r"metrics.jsonl is empty: the run has not logged an iteration yet."),
        (
            '{"iter": 1, "train_loss": 4.0}\n{"iter": 2, "tra',
            r"Line 2 of .* is not a metrics record",
        ),
    ],
)
def test_bad_input_fails_with_one_sentence(tmp_path, capsys, content, message):
    (tmp_path / "out").mkdir()
    if content is not None:
        (tmp_path / "out" / "metrics.jsonl").write_text(content)
    assert main(["plot", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert error.startswith("gpt2 plot: error: ") and len(error.strip().splitlines()) == 1
    assert re.search(message, error), error


def test_an_output_without_a_suffix_is_written_as_given(tmp_path, capsys):
    run = _write_metrics(tmp_path / "out")
    assert main(["plot", str(run), "-o", str(tmp_path / "curve")]) == 0
    assert (tmp_path / "curve").read_bytes().startswith(PNG_MAGIC)
    assert capsys.readouterr().out.strip() == str(tmp_path / "curve")


def test_an_unwritable_output_fails_with_one_sentence(tmp_path, capsys):
    run = _write_metrics(tmp_path / "out")
    (tmp_path / "file").write_text("")
    for output in (tmp_path / "file" / "x.png", run):
        assert main(["plot", str(run), "-o", str(output)]) == 2
        error = capsys.readouterr().err
        assert len(error.strip().splitlines()) == 1
        assert error.startswith(f"gpt2 plot: error: Cannot write the plot to {output} (")


def test_non_numeric_and_non_finite_values_are_left_out_of_the_curves(tmp_path):
    run = _write_metrics(tmp_path / "out", n_iters=4)
    with (run / "metrics.jsonl").open("a") as handle:
        handle.write('{"iter": 5, "train_loss": "abc", "lr": {}, "val_loss": NaN}\n')
        handle.write('{"iter": 6, "train_loss": Infinity, "lr": true, "val_loss": null}\n')
    assert main(["plot", str(run)]) == 0
    assert (run / "loss.png").read_bytes().startswith(PNG_MAGIC)


@pytest.mark.parametrize("iteration", ["Infinity", "NaN", '"abc"', "{}"])
def test_an_iter_that_is_not_a_number_fails_naming_the_line(tmp_path, capsys, iteration):
    run = _write_metrics(tmp_path / "out", n_iters=2)
    with (run / "metrics.jsonl").open("a") as handle:
        handle.write(f'{{"iter": {iteration}, "train_loss": 1.0}}\n')
    assert main(["plot", str(run)]) == 2
    assert "Line 3 of " in capsys.readouterr().err


def test_the_cli_imports_matplotlib_only_when_plotting():
    code = "import sys; from shared.cli import build_parser; build_parser(); print('matplotlib' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"
