"""`gpt2 bench`'s whole run on a tiny model: every measure is reported, with sane values, and the
report writes its JSON, markdown and plot."""

from __future__ import annotations

import json
import math

import pytest

from shared.backend import backend_names
from shared.benchmarks import machine, results, suite


@pytest.fixture(scope="module")
def report(tiny_config):
    settings = suite.BenchSettings(
        size=tiny_config, backends=tuple(backend_names()), prompt_len=4, new_tokens=8,
        batch_sizes=(1, 2), prefill_len=16, train_batch=2, train_seq=16,
    )  # fmt: skip
    return suite.run(settings)


def _positive(value):
    return value is not None and math.isfinite(value) and value > 0


@pytest.mark.slow
def test_every_backend_gets_every_generation_and_training_measure(report):
    for backend in backend_names():
        for group, name in [
            ("latency", "time to first token, cold (compile included)"),
            ("latency", "time to first token, warm"),
            ("generation", "decode batch 1, greedy"),
            ("generation", "decode batch 2, top-p 0.9"),
            ("ratios", "decode batch 2 / batch 1 (greedy)"),
            ("prefill", "prefill, 16-token prompt"),
            ("training", "train step, batch 2 x seq 16, float32"),
        ]:
            assert _positive(report.value(group, name, backend)), (group, name, backend)
        mfu = report.value("training", "model FLOPs utilisation", backend)
        assert 0 < mfu < 1  # of the fastest matrix product measured in the same run
        (note,) = [
            r.note
            for r in report.results
            if (r.name, r.backend) == ("model FLOPs utilisation", backend)
        ]
        assert "GFLOP/s, fastest measured float32 matrix product" in note


@pytest.mark.slow
def test_baselines_and_ratios_are_measured_in_the_same_run(report):
    assert _positive(report.value("machine", "memory read bandwidth (matrix-vector)"))
    assert _positive(
        report.value("ratios", "cached decode / recompute loop, batch 1", "functional")
    )
    assert _positive(report.value("ratios", "bf16 / fp32 batch-1 greedy decode", "functional"))
    for backend in set(backend_names()) - {"functional"}:
        # Interleaved timing of the same tiny model: far from 1 only if something is broken.
        step_ratio = report.value("ratios", "batch-1 decode step time vs functional", backend)
        assert 0.2 < step_ratio < 5, (backend, step_ratio)


@pytest.mark.slow
def test_the_report_writes_json_markdown_and_a_plot(report, tmp_path):
    results.write(report, tmp_path / "r.json", tmp_path / "r.md")
    results.plot_decode_throughput(report, tmp_path / "r.png")
    assert results.Report.from_json(json.loads((tmp_path / "r.json").read_text())).results
    assert "| decode batch 1, greedy | functional |" in (tmp_path / "r.md").read_text()
    assert (tmp_path / "r.png").read_bytes().startswith(b"\x89PNG")


def test_the_measured_peak_is_the_fastest_product_not_the_last():
    # A 32-cube product is dispatch-bound, a 256-cube one is not: the peak over both, listed with
    # the slow one last, must be the fast one's.
    small = machine.matmul_flops(shapes=((32, 32, 32),), repeats=3)
    both = machine.matmul_flops(shapes=((256, 256, 256), (32, 32, 32)), repeats=3)
    assert both > 4 * small


def test_flop_rates_are_written_in_a_unit_that_shows_their_digits():
    assert suite._flop_rate(8.3e10) == "83 GFLOP/s"
    assert suite._flop_rate(9.89e14) == "989 TFLOP/s"
