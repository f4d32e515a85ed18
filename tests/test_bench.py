"""`gpt2 bench`'s whole run on a tiny model: every measure is reported, with sane values, and the
report writes its JSON, markdown and plot."""

from __future__ import annotations

import gzip
import json
import math

import pytest

from shared.backend import backend_names
from shared.benchmarks import generation, machine, results, suite, training
from shared.cli import main
from shared.config import GPT2Config
from shared.errors import GPT2Error


@pytest.fixture(scope="module")
def profile_dir(tmp_path_factory):
    """Where `report`'s run writes its profiler traces."""
    return tmp_path_factory.mktemp("profile")


@pytest.fixture(scope="module")
def report(tiny_config, profile_dir):
    """The whole run on every backend, profiled (`gpt2 bench --profile`)."""
    settings = suite.BenchSettings(
        size=tiny_config, backends=tuple(backend_names()), prompt_len=4, new_tokens=8,
        batch_sizes=(1, 2), prefill_len=16, train_batch=2, train_seq=16, profile_dir=profile_dir,
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
            ("training", "train step temporary memory (XLA's buffer plan)"),
        ]:
            assert _positive(report.value(group, name, backend)), (group, name, backend)
        assert _positive(report.value("training", "model FLOPs utilisation", backend))
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
    for batch in (1, 2):  # batch 1 and the largest batch
        ratio = report.value("ratios", f"bf16 / fp32 batch-{batch} greedy decode", "functional")
        assert _positive(ratio), batch
    for backend in backend_names():  # int8 on every backend
        assert report.value("ratios", "int8 / fp32 weights bytes", backend) < 0.5, backend
        for batch in (1, 2):
            ratio = report.value("ratios", f"int8 / fp32 batch-{batch} greedy decode", backend)
            assert _positive(ratio), (backend, batch)
    for backend in set(backend_names()) - {"functional"}:
        step_ratio = report.value("ratios", "batch-1 decode step time vs functional", backend)
        assert _positive(step_ratio), backend


@pytest.mark.slow
def test_the_report_writes_json_markdown_and_a_plot(report, tmp_path):
    results.write(report, tmp_path / "r.json", tmp_path / "r.md")
    results.plot_decode_throughput(report, tmp_path / "r.png")
    assert results.Report.from_json(json.loads((tmp_path / "r.json").read_text())).results
    assert "| decode batch 1, greedy | functional |" in (tmp_path / "r.md").read_text()
    assert (tmp_path / "r.png").read_bytes().startswith(b"\x89PNG")


def test_the_measured_peak_is_the_fastest_product_not_the_last(monkeypatch):
    seconds = {256: 1e-3, 32: 1e-4}  # by m: the 256-cube product runs at 33.6 GFLOP/s, 32 at 0.66
    monkeypatch.setattr(machine, "best_seconds", lambda fn, a, b, repeats: seconds[a.shape[0]])
    peak = machine.matmul_flops(shapes=((256, 256, 256), (32, 32, 32)), repeats=1)
    assert peak == 2 * 256**3 / 1e-3


def test_flop_rates_are_written_in_a_unit_that_shows_their_digits():
    assert suite._flop_rate(8.3e10) == "83 GFLOP/s"
    assert suite._flop_rate(9.89e14) == "989 TFLOP/s"


@pytest.fixture
def no_measuring(monkeypatch):
    """Settings must be refused before the run's first measure, the memory bandwidth."""

    def measured():
        raise AssertionError("measured before validating")

    monkeypatch.setattr(machine, "memory_bandwidth", measured)


def _fake_decode(monkeypatch):
    """Decode at batch b runs at 100 * b tokens/s, and the rest of a backend's section at once."""
    monkeypatch.setattr(generation, "time_to_first_token", lambda *_: (1.0, 0.5))
    monkeypatch.setattr(
        generation, "decode_tokens_per_s", lambda _, batch, *args: (100.0 * batch, 1.0)
    )
    monkeypatch.setattr(generation, "prefill_tokens_per_s", lambda *_: 1000.0)
    monkeypatch.setattr(generation, "recompute_tokens_per_s", lambda *_: 10.0)


def _ratios(report):
    return {r.name: r.value for r in report.results if r.group == "ratios"}


def test_batch_ratios_are_against_batch_1_whatever_the_order(monkeypatch, tiny_config):
    _fake_decode(monkeypatch)
    report = results.Report("t", {})
    settings = suite.BenchSettings(size=tiny_config, batch_sizes=(8, 1, 2), prompt_len=4)
    suite._generation(report, settings, "functional", bandwidth=1e9)
    ratios = _ratios(report)
    assert ratios["decode batch 8 / batch 1 (greedy)"] == 8
    assert ratios["decode batch 2 / batch 1 (greedy)"] == 2
    assert "decode batch 1 / batch 1 (greedy)" not in ratios


def test_without_batch_1_the_ratios_on_it_are_skipped(monkeypatch, tiny_config):
    _fake_decode(monkeypatch)
    report = results.Report("t", {})
    settings = suite.BenchSettings(size=tiny_config, batch_sizes=(2, 4), prompt_len=4)
    suite._generation(report, settings, "functional", bandwidth=1e9)
    assert report.value("generation", "decode batch 4, greedy", "functional") == 400
    assert report.value("generation", "recompute-everything loop (seed), batch 1", "functional")
    assert _ratios(report) == {}


def test_the_train_ratio_is_reported_whatever_the_backend_order(monkeypatch, tiny_config):
    speed, remat = {"haiku": 50.0, "functional": 100.0}, []

    def measured(name, *_, **options):
        remat.append(options["remat"])
        return {"tokens_per_s": speed[name], "compile_s": 1.0, "flops_per_token": 1.0,
                "temp_bytes": 2e9}  # fmt: skip

    monkeypatch.setattr(machine, "peak_flops", lambda _: (1e12, "test"))
    monkeypatch.setattr(training, "train_step_throughput", measured)
    report = results.Report("t", {})
    settings = suite.BenchSettings(
        size=tiny_config, backends=("haiku", "functional"), train_remat=True
    )
    suite._training(report, settings)
    assert report.value("ratios", "train step time vs functional", "haiku") == 2
    assert report.value("training", "train step, batch 4 x seq 256, float32, remat", "haiku") == 50
    assert remat == [True, True]


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"prefill_len": 64}, "--prefill-len 64 is 64 tokens"),
        ({"prompt_len": 8, "new_tokens": 16}, "--prompt-len 8 plus --new-tokens 16 is 24 tokens"),
        ({"train_seq": 64}, "--train-seq 64 is 64 tokens"),
    ],
)
def test_lengths_beyond_the_context_are_refused_before_measuring(no_measuring, setting, message):
    short = GPT2Config(n_embd=32, n_head=4, n_layer=2, n_vocab=512, n_ctx=16)
    fits = {"prompt_len": 4, "new_tokens": 8, "prefill_len": 16, "train_seq": 16}
    settings = suite.BenchSettings(size=short, **(fits | setting))
    with pytest.raises(GPT2Error, match=f"^{message}, beyond the model's context .* of 16;"):
        suite.run(settings)


def _bench_error(capsys, *argv):
    assert main(["bench", *argv]) == 2
    error = capsys.readouterr().err
    assert error.startswith("gpt2 bench: error: ") and len(error.strip().splitlines()) == 1
    return error


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--new-tokens", "0"], "--new-tokens takes counts of at least 1, got 0."),
        (["--train-batch", "-2"], "--train-batch takes counts of at least 1, got -2."),
        (["--batch-sizes", "1,0"], "--batch-sizes takes counts of at least 1, got 0."),
        (["--batch-sizes", ","], "--batch-sizes needs at least one batch size, such as 1,8."),
    ],
)
def test_bad_counts_are_refused_before_measuring(no_measuring, capsys, argv, message):
    assert message in _bench_error(capsys, *argv)


def test_a_batch_list_that_is_not_integers_is_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["bench", "--batch-sizes", "1,x"])
    assert stopped.value.code == 2
    assert capsys.readouterr().err.endswith(
        "error: argument --batch-sizes: expected comma-separated integers such as 1,8, got '1,x'\n"
    )


def test_an_unknown_model_size_is_refused(no_measuring, capsys):
    error = _bench_error(capsys, "--model-size", "7B", "--no-generation", "--no-train")
    assert "Unknown model size '7B'" in error


def test_models_dir_without_the_weights_is_refused_before_measuring(no_measuring, capsys, tmp_path):
    error = _bench_error(capsys, "--models-dir", str(tmp_path), "--no-generation", "--no-train")
    assert f"run `gpt2 download 124M --models-dir {tmp_path}` first." in error


@pytest.mark.parametrize("option", ["--json", "--markdown", "--plot"])
def test_unwritable_outputs_are_refused_before_measuring(no_measuring, capsys, tmp_path, option):
    (tmp_path / "file").write_text("")
    for path in (tmp_path, tmp_path / "file" / "r.out"):
        assert f"Cannot write {option} {path} (" in _bench_error(capsys, option, str(path))


def test_a_plot_without_generation_is_refused_before_measuring(no_measuring, capsys, tmp_path):
    error = _bench_error(capsys, "--no-generation", "--plot", str(tmp_path / "r.png"))
    assert "--plot draws decode throughput, which --no-generation skips" in error


@pytest.mark.slow
def test_profile_writes_a_trace_of_each_warm_decode_and_training_step(report, profile_dir):
    names = {
        f"{backend}-decode-batch-{batch}-{sampler}"
        for backend in backend_names()
        for batch in (1, 2)
        for sampler in ("greedy", "top-p-0.9")
    } | {f"{backend}-train-step" for backend in backend_names()}
    assert {path.name for path in profile_dir.iterdir()} == names
    for name in names:
        (trace,) = (profile_dir / name).glob("plugins/profile/*/perfetto_trace.json.gz")
        events = json.loads(gzip.decompress(trace.read_bytes()))
        assert name in {event.get("name") for event in events["traceEvents"]}, name


def test_a_profile_folder_that_is_a_file_is_refused_before_measuring(
    no_measuring, capsys, tmp_path
):
    (tmp_path / "file").write_text("")
    error = _bench_error(capsys, "--profile", str(tmp_path / "file"))
    assert f"Cannot write --profile {tmp_path / 'file'} (" in error
