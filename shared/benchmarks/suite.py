"""The whole benchmark run behind `gpt2 bench`: every measure for every backend asked for, the
machine's limits, and the ratios the targets are stated in, all from one process."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from shared.backend import Backend
from shared.benchmarks import generation, machine, profiling, startup, training
from shared.benchmarks.results import Report, Result
from shared.config import GPT2Config, config_for_size
from shared.errors import GPT2Error
from shared.generation import GREEDY, Generator
from shared.weights.openai import is_downloaded


@dataclasses.dataclass(frozen=True)
class BenchSettings:
    """What to measure; the defaults: 124M, a 32-token prompt, 256 new tokens."""

    size: str | GPT2Config = "124M"  # a config for tests; `gpt2 bench` takes a size name
    backends: tuple[str, ...] = ("functional",)
    prompt_len: int = 32
    new_tokens: int = 256
    batch_sizes: tuple[int, ...] = (1, 8)
    prefill_len: int = 1024
    generation: bool = True
    recompute_baseline: bool = True
    bfloat16: bool = True
    int8: bool = True
    train: bool = True
    train_batch: int = 4
    train_seq: int = 256
    train_dtype: str = "float32"
    train_remat: bool = False
    models_dir: Path | None = None  # cached weights to time a whole `gpt2 generate` process
    profile_dir: Path | None = None  # where traces of warm decode and training runs go


def default_settings(backends: Sequence[str], **overrides: Any) -> BenchSettings:
    """Per-platform defaults: on GPU, training at seq 1024 in bf16 and decode up to batch 64."""
    on_gpu = machine.device().platform == "gpu"
    defaults: dict[str, Any] = {"backends": tuple(backends)}  # BenchSettings' keywords
    if on_gpu:
        defaults |= {"batch_sizes": (1, 8, 64), "train_batch": 32, "train_seq": 1024,
                     "train_dtype": "bfloat16"}  # fmt: skip
    return BenchSettings(**(defaults | {k: v for k, v in overrides.items() if v is not None}))


def validate(settings: BenchSettings) -> None:
    """Fail in one sentence before minutes of measuring: an unknown size, a count below 1, a
    length past the model's context (it would be timed as if it fit), no weights for the
    `gpt2 generate` timing."""
    n_ctx = config_for_size(settings.size).n_ctx
    counts = [("--prompt-len", settings.prompt_len), ("--new-tokens", settings.new_tokens),
              ("--prefill-len", settings.prefill_len), ("--train-batch", settings.train_batch),
              ("--train-seq", settings.train_seq)]  # fmt: skip
    counts += [("--batch-sizes", size) for size in settings.batch_sizes]
    if not settings.batch_sizes:
        raise GPT2Error("--batch-sizes needs at least one batch size, such as 1,8.")
    for option, count in counts:
        if count < 1:
            raise GPT2Error(f"{option} takes counts of at least 1, got {count}.")
    lengths = []  # (the options as given, the tokens they put in the context)
    if settings.generation:
        prompt, new = settings.prompt_len, settings.new_tokens
        lengths += [(f"--prefill-len {settings.prefill_len}", settings.prefill_len),
                    (f"--prompt-len {prompt} plus --new-tokens {new}", prompt + new)]  # fmt: skip
    if settings.train:
        lengths.append((f"--train-seq {settings.train_seq}", settings.train_seq))
    for given, length in lengths:
        if length > n_ctx:
            raise GPT2Error(
                f"{given} is {length} tokens, beyond the model's context (n_ctx) of {n_ctx}; "
                f"give at most {n_ctx}."
            )
    folder = settings.models_dir
    if folder is not None and not is_downloaded(str(settings.size), folder):
        raise GPT2Error(
            f"The {settings.size} weights are not downloaded in --models-dir {folder}; run "
            f"`gpt2 download {settings.size} --models-dir {folder}` first."
        )


def run(settings: BenchSettings, on_result: Callable[[Result], None] | None = None) -> Report:
    validate(settings)
    report = Report(
        f"GPT-2 {settings.size}, random weights, prompt {settings.prompt_len}, "
        f"{settings.new_tokens} new tokens",
        machine.description(),
        on_add=on_result,
    )
    bandwidth = machine.memory_bandwidth()
    report.add(Result("machine", "memory read bandwidth (matrix-vector)", bandwidth / 1e9, "GB/s"))
    for backend in settings.backends if settings.generation else ():
        _generation(report, settings, backend, bandwidth)
    if settings.generation and "functional" in settings.backends and len(settings.backends) > 1:
        _decode_step_ratios(report, settings)
    if settings.bfloat16 and settings.generation:
        _bfloat16(report, settings)
    for backend in settings.backends if settings.int8 and settings.generation else ():
        _int8(report, settings, backend)
    if settings.train:
        _training(report, settings)
    if settings.models_dir is not None:
        first, warm = startup.warm_start_seconds(settings.models_dir, str(settings.size))
        report.add(
            Result("latency", "`gpt2 generate` process start to first token, first run", first,
                   "s", "functional"),
            Result("latency", "`gpt2 generate` process start to first token, warm", warm, "s",
                   "functional", "weights and compiled programs cached"),
        )  # fmt: skip
    report.add(
        Result(
            "machine",
            "peak device memory in use during the run",
            _gigabytes(machine.peak_memory_bytes()),
            "GB",
        )
    )
    return report


def _gigabytes(count: int | None) -> float | None:
    return None if count is None else count / 1e9


def _generation(report: Report, settings: BenchSettings, name: str, bandwidth: float) -> None:
    backend, params, config = generation.random_model(settings.size, name)
    generator = Generator(backend, params, config)
    cold, warm = generation.time_to_first_token(generator, settings.prompt_len)
    report.add(
        Result("latency", "time to first token, cold (compile included)", cold, "s", name),
        Result("latency", "time to first token, warm", warm, "s", name),
    )
    throughput = {}
    for batch in settings.batch_sizes:
        for label, sampling in (("greedy", GREEDY), ("top-p 0.9", generation.TOP_P)):
            tokens_per_s, compile_s = generation.decode_tokens_per_s(
                generator, batch, settings.prompt_len, settings.new_tokens, sampling
            )
            throughput[batch, label] = tokens_per_s
            report.add(
                Result("generation", f"decode batch {batch}, {label}", tokens_per_s, "tokens/s",
                       name, f"first run {compile_s:.1f} s"),
            )  # fmt: skip
            if settings.profile_dir is not None:
                trace = f"{name}-decode-batch-{batch}-{label.replace(' ', '-')}"
                prompts = generation.random_prompts(batch, settings.prompt_len, config)
                with profiling.traced(settings.profile_dir, trace):
                    generator.generate(prompts, settings.new_tokens, sampling)  # compiled above
    batch_1 = throughput.get((1, "greedy"))  # the baseline of the ratios; None if not measured
    if batch_1 is not None:
        _batch_ratios(report, name, throughput, bandwidth / generation.parameter_bytes(params))
    prefill = generation.prefill_tokens_per_s(backend, params, config, settings.prefill_len)
    report.add(Result("prefill", f"prefill, {settings.prefill_len}-token prompt", prefill,
                      "tokens/s", name))  # fmt: skip
    if settings.recompute_baseline and name == "functional":
        recompute = generation.recompute_tokens_per_s(
            backend, params, config, settings.prompt_len, settings.new_tokens
        )
        report.add(Result("generation", "recompute-everything loop (seed), batch 1", recompute,
                          "tokens/s", name))  # fmt: skip
        if batch_1 is not None:
            report.add(Result("ratios", "cached decode / recompute loop, batch 1",
                              batch_1 / recompute, "x", name))  # fmt: skip
    del generator, params
    jax.clear_caches()


def _batch_ratios(
    report: Report, name: str, throughput: dict[tuple[int, str], float], roofline: float
) -> None:
    """Batch-1 greedy decode against the memory-bandwidth roofline, every other batch against it."""
    batch_1 = throughput[1, "greedy"]
    report.add(
        Result("ratios", "batch-1 greedy decode / memory-bandwidth roofline", batch_1 / roofline,
               "fraction", name, f"roofline {roofline:.0f} tokens/s"),
    )  # fmt: skip
    for batch in dict.fromkeys(batch for batch, _ in throughput if batch != 1):
        report.add(
            Result("ratios", f"decode batch {batch} / batch 1 (greedy)",
                   throughput[batch, "greedy"] / batch_1, "x", name),
        )  # fmt: skip


def _decode_step_ratios(report: Report, settings: BenchSettings, rounds: int = 6) -> None:
    """Each backend's batch-1 decode step time against functional's, timed in alternation.

    The per-backend sections run minutes apart, and a virtual machine's speed can drift over a
    run; taking each backend's best over interleaved rounds keeps that drift out of the ratio.
    Three rounds proved too few to settle the ratio where six did, hence six.
    """
    generators = {
        name: Generator(*generation.random_model(settings.size, name)) for name in settings.backends
    }
    best = _interleaved(generators, settings, 1, rounds)
    for name in [name for name in generators if name != "functional"]:
        report.add(
            Result("ratios", "batch-1 decode step time vs functional", best["functional"]
                   / best[name], "x", name, f"best of {rounds} interleaved rounds"),
        )  # fmt: skip
    del generators
    jax.clear_caches()


def _interleaved(
    generators: dict[str, Generator], settings: BenchSettings, batch: int, rounds: int
) -> dict[str, float]:
    """Each generator's best greedy decode tokens/s over `rounds` rounds that time them in turn."""
    best = dict.fromkeys(generators, 0.0)
    for _ in range(rounds):
        for name, generator in generators.items():
            tokens_per_s, _ = generation.decode_tokens_per_s(
                generator, batch, settings.prompt_len, settings.new_tokens, repeats=1
            )
            best[name] = max(best[name], tokens_per_s)
    return best


def _bfloat16(report: Report, settings: BenchSettings) -> None:
    """bf16 weights (and so a bf16 KV cache) vs fp32 on the functional backend, at batch 1 and the
    largest batch: speed, and how far the logits drift. Batch 1 reads mostly weights, the largest
    batch mostly the cache."""
    config = config_for_size(settings.size)
    tokens = np.asarray(generation.random_prompts(1, settings.prompt_len, config), np.int32)
    models = _models_in(settings, "functional", "bfloat16")
    logits = {
        dtype: generation.full_forward_logits(*model, tokens) for dtype, model in models.items()
    }
    drift = _drift(logits["bfloat16"], logits["float32"])
    generator = Generator(*models["bfloat16"])
    for batch in sorted({1, max(settings.batch_sizes)}):
        bf16, _ = generation.decode_tokens_per_s(
            generator, batch, settings.prompt_len, settings.new_tokens
        )
        fp32 = report.value("generation", f"decode batch {batch}, greedy", "functional")
        report.add(
            Result("generation", f"decode batch {batch}, greedy, bf16 weights", bf16, "tokens/s",
                   "functional"),
            Result("ratios", f"bf16 / fp32 batch-{batch} greedy decode",
                   bf16 / fp32 if fp32 else None, "x", "functional",
                   drift),
        )  # fmt: skip


def _int8(report: Report, settings: BenchSettings, name: str, rounds: int = 3) -> None:
    """Weight-only int8 (`shared.quantization`) vs fp32 weights on backend `name`: the weights'
    bytes, batch-1 and largest-batch decode (the two timed in interleaved rounds, as
    `_decode_step_ratios` says why), and how far the logits drift."""
    config = config_for_size(settings.size)
    tokens = np.asarray(generation.random_prompts(1, settings.prompt_len, config), np.int32)
    models = _models_in(settings, name, "int8")
    logits = {
        dtype: generation.full_forward_logits(*model, tokens) for dtype, model in models.items()
    }
    drift = _drift(logits["int8"], logits["float32"])
    int8_bytes, fp32_bytes = (generation.parameter_bytes(models[d][1]) for d in ("int8", "float32"))
    report.add(
        Result("memory", "weights, int8", int8_bytes / 1e6, "MB", name),
        Result("ratios", "int8 / fp32 weights bytes", int8_bytes / fp32_bytes, "x", name),
    )  # fmt: skip
    generators = {dtype: Generator(*model) for dtype, model in models.items()}
    for batch in sorted({1, max(settings.batch_sizes)}):
        best = _interleaved(generators, settings, batch, rounds)
        report.add(
            Result("generation", f"decode batch {batch}, greedy, int8 weights", best["int8"],
                   "tokens/s", name, f"fp32 {best['float32']:.1f} in the same rounds"),
            Result("ratios", f"int8 / fp32 batch-{batch} greedy decode",
                   best["int8"] / best["float32"], "x", name,
                   f"{drift}; best of {rounds} interleaved rounds"),
        )  # fmt: skip
    del generators, models
    jax.clear_caches()


def _models_in(
    settings: BenchSettings, name: str, dtype: str
) -> dict[str, tuple[Backend, Any, GPT2Config]]:
    """Backend `name`'s random model with float32 weights and the same weights in `dtype`."""
    backend, params, config = generation.random_model(settings.size, name)
    converted = generation.weights_dtype(backend, params, config, dtype)
    return {"float32": (backend, params, config), dtype: (backend, converted, config)}


def _drift(logits: np.ndarray, reference: np.ndarray) -> str:
    """How far `logits` [batch, seq, vocab] are from `reference`, in words."""
    drift = np.max(np.abs(logits - reference)) / np.max(np.abs(reference))
    agree = np.mean(logits.argmax(-1) == reference.argmax(-1))
    return f"logit drift {drift:.1e} of max |logit|, argmax agrees {agree:.0%}"


def _training(report: Report, settings: BenchSettings) -> None:
    peak, source = machine.peak_flops(settings.train_dtype)
    label = (
        f"train step, batch {settings.train_batch} x seq {settings.train_seq}, "
        f"{settings.train_dtype}{', remat' if settings.train_remat else ''}"
    )
    for name in settings.backends:
        measured = training.train_step_throughput(
            name, settings.size, settings.train_batch, settings.train_seq, settings.train_dtype,
            remat=settings.train_remat, profile_dir=settings.profile_dir,
        )  # fmt: skip
        tokens_per_s = measured["tokens_per_s"]
        report.add(
            Result("training", label, tokens_per_s, "tokens/s", name,
                   f"compile {measured['compile_s']:.1f} s"),
            Result("training", "model FLOPs utilisation", measured["flops_per_token"]
                   * tokens_per_s / peak, "fraction", name, f"peak {_flop_rate(peak)}, {source}"),
            Result("training", "train step temporary memory (XLA's buffer plan)",
                   _gigabytes(measured["temp_bytes"]), "GB", name),
        )  # fmt: skip
        jax.clear_caches()
    reference = report.value("training", label, "functional")  # after every backend ran
    others = [name for name in settings.backends if name != "functional"]
    for name in others if reference else ():
        tokens_per_s = report.value("training", label, name)
        assert reference and tokens_per_s, "every backend ran the training benchmark"
        report.add(Result("ratios", "train step time vs functional", reference / tokens_per_s,
                          "x", name))  # fmt: skip


def _flop_rate(flops: float) -> str:
    """A peak in the unit that shows its digits: a CPU's 0.08 TFLOP/s reads as 83 GFLOP/s."""
    return f"{flops / 1e12:,.0f} TFLOP/s" if flops >= 1e12 else f"{flops / 1e9:,.0f} GFLOP/s"
