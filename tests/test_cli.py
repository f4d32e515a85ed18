"""`gpt2` end to end, as a subprocess, against a local server in the layout of OpenAI's storage."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

import gpt2 as gpt2_package
from shared import api, weights
from tests.support.greedy import greedy_tokens
from tests.support.openai_server import OpenAIServer
from tests.support.paths import TINY_SHAKESPEARE

SIZES = ("124M", "355M", "1558M")


@pytest.fixture(scope="module")
def server(openai_checkpoint_dir, tmp_path_factory):
    """The tiny real-format checkpoint served under several size names."""
    root = tmp_path_factory.mktemp("storage")
    for size in SIZES:
        shutil.copytree(openai_checkpoint_dir, root / "models" / size)
    with OpenAIServer(root) as running:
        yield running


@pytest.fixture(scope="module")
def env(server, tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    return {
        **os.environ,
        "GPT2_BASE_URL": server.base_url,
        "GPT2_MODELS_DIR": str(cache / "models"),
        "JAX_COMPILATION_CACHE_DIR": str(cache / "xla"),
        "JAX_PLATFORMS": "cpu",
    }


def gpt2(env, *args, stdin=None):
    return subprocess.run(
        [sys.executable, "-m", "gpt2", *args], env=env, input=stdin, capture_output=True,
        text=True, timeout=300,
    )  # fmt: skip


def ok(result):
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def model(env):
    ok(gpt2(env, "download", "124M"))
    return api.load_model("124M", models_dir=env["GPT2_MODELS_DIR"], progress=False)


# `gpt2 generate` whose token source waits at each chunk it has yielded: it says so on stderr and
# reads a line of stdin before computing the next, so the test sees stdout between chunks.
GATED_GENERATE = """
import sys
from shared import generation
from shared.cli import main

plain = generation.Generator.stream_checked

def gated(self, *args, **kwargs):
    for count, item in enumerate(plain(self, *args, **kwargs), start=1):
        yield item
        sys.stderr.write(f"@gate {count}\\n")
        sys.stderr.flush()
        sys.stdin.readline()

generation.Generator.stream_checked = gated
sys.exit(main(sys.argv[1:]))
"""


def test_generate_streams_the_same_text_as_the_python_api(env, model):
    """Text is on stdout chunk by chunk: what the first token made is there before the second is
    computed, and it grows over many chunks into exactly the Python API's text."""
    prompt = "The future of artificial intelligence is"
    args = ["generate", "--prompt", prompt, "--max-new-tokens", "50", "--seed", "1"]
    buffered = {k: v for k, v in env.items() if k != "PYTHONUNBUFFERED"}  # as a user runs it
    process = subprocess.Popen(
        [sys.executable, "-c", GATED_GENERATE, *args], env=buffered, stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    os.set_blocking(process.stdout.fileno(), False)
    watchdog = threading.Timer(300, process.kill)  # a hung child ends the test, not the run
    watchdog.start()
    shown, seen, stderr = [], b"", []
    try:
        for line in process.stderr:  # the child writes, flushes, then says it is at the gate
            stderr.append(line)
            if not line.startswith(b"@gate "):
                continue
            while (piece := process.stdout.read()) is not None and piece:
                seen += piece
            assert process.poll() is None  # still in the middle of generating
            shown.append(seen.decode())
            process.stdin.write(b"\n")
            process.stdin.flush()
        process.wait(timeout=300)
    finally:
        watchdog.cancel()
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, b"".join(stderr).decode()
    os.set_blocking(process.stdout.fileno(), True)
    out = (seen + process.stdout.read()).decode()
    expected = model.generate(prompt, 50, temperature=1.0, top_k=40, seed=1)[0]
    assert out == prompt + expected + "\n"
    assert len(model.tokenizer.encode(expected)) >= 40  # tokens may merge when re-encoded
    assert shown[0].startswith(prompt) and len(shown[0]) > len(prompt)  # before token 2 exists
    assert len(shown) == 49  # a wait after each token's chunk but the last, which ends it
    assert all(out.startswith(text) for text in shown)
    assert len(set(shown)) > 25  # the text grew at many of the 50 chunks, not once at the end


@pytest.mark.slow
def test_sampling_options_and_seed_make_runs_reproducible(env):
    args = ["generate", "--prompt", "Once upon a time", "--model-size", "355M",
            "--temperature", "1.2", "--top-p", "0.9", "--seed", "7", "--max-new-tokens", "20"]  # fmt: skip
    first, second = ok(gpt2(env, *args)), ok(gpt2(env, *args))
    assert first == second
    flat = ["generate", "--prompt", "Once upon a time", "--temperature", "50", "--top-k", "none",
            "--max-new-tokens", "20"]  # fmt: skip
    assert ok(gpt2(env, *flat, "--seed", "7")) != ok(gpt2(env, *flat, "--seed", "8"))


def test_a_second_run_reuses_the_first_runs_exported_programs(env, model):
    """A warm start reads the traced programs back instead of tracing the model again."""
    programs = Path(env["JAX_COMPILATION_CACHE_DIR"]) / "programs"
    args = ["generate", "--prompt", "A warm start", "--max-new-tokens", "5", "--seed", "9"]
    first = ok(gpt2(env, *args))
    written = {path.name: path.stat().st_mtime_ns for path in programs.iterdir()}
    assert {name.split("-")[0] for name in written} == {"_prefill", "_decode"}
    assert ok(gpt2(env, *args)) == first
    assert {path.name: path.stat().st_mtime_ns for path in programs.iterdir()} == written
    assert first == "A warm start" + model.generate("A warm start", 5, top_k=40, seed=9)[0] + "\n"


def test_stop_string_typed_as_backslash_n_stops_at_the_first_newline(env, model):
    out = ok(gpt2(env, "generate", "--prompt", "A robot walks into a bar", "--temperature", "1.2",
                  "--top-k", "10", "--stop", r"\n", "--seed", "3", "--max-new-tokens", "60"))  # fmt: skip
    assert out.count("\n") == 1 and out.endswith("\n")
    full = model.generate("A robot walks into a bar", 60, temperature=1.2, top_k=10, seed=3)[0]
    assert out == "A robot walks into a bar" + full.split("\n")[0] + "\n"


def test_two_prompts_two_samples_give_four_rows(env, model):
    out = ok(gpt2(env, "generate", "--prompt", "Hello", "--prompt", "Goodbye, old friend",
                  "--num-samples", "2", "--seed", "5", "--max-new-tokens", "8"))  # fmt: skip
    headers = [line for line in out.splitlines() if line.startswith("=== sample")]
    assert headers == [
        "=== sample 1 of prompt 1 ===", "=== sample 2 of prompt 1 ===",
        "=== sample 1 of prompt 2 ===", "=== sample 2 of prompt 2 ===",
    ]  # fmt: skip
    texts = model.generate(["Hello", "Goodbye, old friend"], 8, top_k=40, seed=5, num_samples=2)
    for text, prompt in zip(
        texts, ["Hello", "Hello", "Goodbye, old friend", "Goodbye, old friend"], strict=True
    ):
        assert prompt + text in out


def test_an_empty_prompt_prints_an_unconditional_sample(env, model):
    out = ok(gpt2(env, "generate", "--prompt", "", "--prompt", "Hi", "--temperature", "0",
                  "--max-new-tokens", "8"))  # fmt: skip
    unconditional, continued = model.generate(["", "Hi"], 8, temperature=0)
    expected = f"=== sample 1 of prompt 1 ===\n{unconditional}\n"
    expected += f"=== sample 1 of prompt 2 ===\nHi{continued}\n"
    assert out == expected


def test_checkpoint_samples_weights_that_convert_wrote(env, model, tmp_path):
    ok(gpt2(env, "convert", "124M", str(tmp_path / "hf"), "--to", "hf"))
    out = ok(gpt2(env, "generate", "--checkpoint", str(tmp_path / "hf"), "--prompt", "Hello",
                  "--temperature", "0", "--max-new-tokens", "8", "--backend", "haiku"))  # fmt: skip
    assert out == "Hello" + model.generate("Hello", 8, temperature=0)[0] + "\n"


def test_seed_spellings_are_accepted(env, model):
    out = ok(gpt2(env, "generate", "--prompt", "Hi", "--n_tokens_to_generate", "6",
                  "--model_size", "gpt2", "--top_k", "3", "--top_p", "0.5", "--seed", "2"))  # fmt: skip
    assert out == "Hi" + model.generate("Hi", 6, top_k=3, top_p=0.5, seed=2)[0] + "\n"


@pytest.mark.parametrize(
    ("flag", "setting"),
    [("--repetition-penalty", {"repetition_penalty": 1.5}),
     ("--no-repeat-ngram-size", {"no_repeat_ngram_size": 1})],
)  # fmt: skip
def test_repetition_settings_reach_the_decode_loop(env, model, flag, setting):
    prompt = "The cat sat on the mat. The cat"
    out = ok(gpt2(env, "generate", "--prompt", prompt, "--temperature", "0",
                  flag, str(*setting.values()), "--max-new-tokens", "12"))  # fmt: skip
    curbed = model.generate(prompt, 12, temperature=0, **setting)[0]
    assert out == prompt + curbed + "\n"
    assert curbed != model.generate(prompt, 12, temperature=0)[0]


def test_beam_search_prints_the_python_apis_best_hypotheses(env, model):
    prompts = ["Hello", "Goodbye, old friend"]
    out = ok(gpt2(env, "generate", "--prompt", prompts[0], "--prompt", prompts[1],
                  "--num-beams", "3", "--num-samples", "2", "--max-new-tokens", "8",
                  "--length-penalty", "0.5", "--no-repeat-ngram-size", "2"))  # fmt: skip
    beams = model.beam_search(
        prompts, 8, num_beams=3, num_return=2, length_penalty=0.5, no_repeat_ngram_size=2
    )
    expected = ""
    for i, beam in enumerate(beams):
        expected += f"=== beam {i % 2 + 1} of prompt {i // 2 + 1} (score {beam.score:.4f}) ===\n"
        expected += prompts[i // 2] + beam.text + "\n"
    assert out == expected
    one = ok(gpt2(env, "generate", "--prompt", "Hello", "--num-beams", "3",
                  "--max-new-tokens", "8"))  # fmt: skip
    assert one == "Hello" + model.beam_search("Hello", 8, num_beams=3)[0].text + "\n"


@pytest.mark.parametrize(
    "flags",
    [["--seed", "3"], ["--seed", "3", "--no-stream", "--num-samples", "2"], ["--num-beams", "2"]],
    ids=["stream", "generate", "beam"],
)
def test_a_request_is_checked_once_between_the_command_line_and_the_sampler(
    env, model, monkeypatch, capsys, flags
):
    """`gpt2 generate` checks its request before loading the model and serves that same request:
    the text path does not build (and check) it again, nor the token path its prompts."""
    from shared import generation
    from shared.cli import main
    from shared.request import Request

    counts = {"request": 0, "lengths": 0}
    for name in ("GPT2_BASE_URL", "GPT2_MODELS_DIR"):
        monkeypatch.setenv(name, env[name])
    check, lengths = Request._check, generation.Generator.check_lengths

    def counted_check(self, *args):
        counts["request"] += 1
        return check(self, *args)

    def counted_lengths(self, *args):
        counts["lengths"] += 1
        return lengths(self, *args)

    monkeypatch.setattr(Request, "_check", counted_check)
    monkeypatch.setattr(generation.Generator, "check_lengths", counted_lengths)
    assert main(["generate", "--prompt", "Hello", "--max-new-tokens", "4", *flags]) == 0
    assert capsys.readouterr().out.startswith("Hello" if "--no-stream" not in flags else "===")
    assert counts == {"request": 1, "lengths": 1}


def test_download_of_another_size_converts_it_for_later_runs(env):
    out = ok(gpt2(env, "download", "1558M"))
    assert "1558M" in out
    assert (Path(env["GPT2_MODELS_DIR"]) / "1558M" / weights.CANONICAL_NAME).is_file()
    doctor = ok(gpt2(env, "doctor"))
    assert "1558M" in doctor and env["GPT2_MODELS_DIR"] in doctor


def test_convert_reads_a_size_name_even_beside_a_folder_of_that_name(env, model, tmp_path):
    root = Path(gpt2_package.__file__).parents[1]  # holds the `gpt2` package folder
    result = subprocess.run(
        [sys.executable, "-m", "gpt2", "convert", "gpt2", str(tmp_path / "hf"), "--to", "hf"],
        env=env, cwd=root, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    ok(result)
    tree, _ = weights.load_hf(tmp_path / "hf")
    np.testing.assert_array_equal(tree["wte"], model.params["wte"])


def test_interactive_loop_answers_each_prompt(env, model):
    out = ok(gpt2(env, "generate", "--interactive", "--model-size", "124M", "--temperature", "0",
                  "--max-new-tokens", "5", stdin="Hello\n\nHow are you\n"))  # fmt: skip
    for prompt in ("Hello", "How are you"):
        assert prompt + model.generate(prompt, 5, temperature=0)[0] in out


def test_persistent_compilation_cache_is_filled_and_doctor_reports_it(env, model):
    ok(gpt2(env, "generate", "--prompt", "Cache me", "--max-new-tokens", "3", "--seed", "0"))
    assert any(os.scandir(env["JAX_COMPILATION_CACHE_DIR"]))
    programs = Path(env["JAX_COMPILATION_CACHE_DIR"]) / "programs"
    count = sum(1 for _ in programs.iterdir())
    assert f"programs          {programs} ({count} files, " in ok(gpt2(env, "doctor"))


def test_an_unusable_cache_folder_only_warns(env, model, tmp_path):
    (tmp_path / "a-file").write_text("")
    unusable = {**env, "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "a-file" / "xla")}
    result = gpt2(unusable, "generate", "--prompt", "Hi", "--max-new-tokens", "3")
    assert result.returncode == 0 and result.stdout.startswith("Hi")
    assert "warning: cannot use the cache folder" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_reader_that_goes_away_is_not_an_error(env):
    command = [sys.executable, "-m", "gpt2", "doctor"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.close()  # as `gpt2 doctor | head -1` does once it has its line
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 0 and b"Traceback" not in stderr


def test_version_names_the_package_and_jax(env):
    version = ok(gpt2(env, "--version"))
    assert version.startswith("gpt2-jax ") and " (jax " in version


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--top-p", "0"], "top_p must be in (0, 1], got 0.0."),
        (
            ["--temperature", "-1"],
            "temperature must be a finite number >= 0 (0 = greedy), got -1.0.",
        ),
        (["--top-k", "0"], "top_k must be an integer >= 1 (or unset), got 0."),
        (["--model-size", "13B"], "Unknown model size '13B'; valid sizes are: 124M"),
        (["--max-new-tokens", "200"], "but the model's context is 128 tokens"),
        (["--backend", "torch"], "Unknown backend 'torch'"),
    ],
)
def test_bad_input_fails_with_one_sentence(env, model, args, message):
    result = gpt2(env, "generate", "--prompt", "Hi", *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_truncate_keeps_the_end_of_a_long_prompt(env, model):
    """A 160-token prompt, 80 new tokens, a context of 128: the prompt's last 64 tokens are
    continued by 64, then the text's last 112 by 16 more (see the API's test of `truncate`)."""
    prompt = " ".join(str(n) for n in range(100, 260))
    ids = model.tokenizer.encode(prompt)
    assert len(ids) == 160
    args = ["generate", "--prompt", prompt, "--max-new-tokens", "80", "--temperature", "0"]
    assert gpt2(env, *args).returncode == 2
    out = ok(gpt2(env, *args, "--truncate"))
    first = greedy_tokens(model, ids[-64:], 64)
    second = greedy_tokens(model, (ids + first)[-112:], 16)
    assert len(first + second) == 80
    assert out == prompt + model.tokenizer.decode(first + second) + "\n"
    assert greedy_tokens(model, ids[:64], 64) != first  # the beginning would not do


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--prompt", "Hi", "--num-samples", "0"], "num_samples must be an integer >= 1, got 0."),
        (["--prompt", "Hi", "--max-new-tokens", "0"], "max_new_tokens must be an integer >= 1"),
        (["--prompt", "Hi", "--stop", ""], "A stop string is empty"),
        (["--prompt", "Hi", "--top-p", "1.5"], "top_p must be in (0, 1], got 1.5."),
        (
            ["--prompt", "Hi", "--repetition-penalty", "0"],
            "repetition_penalty must be a finite number > 0 (1 = off, above 1 discourages "
            "repeats), got 0.0.",
        ),
        (
            ["--prompt", "Hi", "--no-repeat-ngram-size", "-1"],
            "no_repeat_ngram_size must be an integer >= 0 (0 = off), got -1.",
        ),
        (["--prompt", "Hi", "--seed", str(2**64)], "seed must be an integer in [-2**63, 2**63)"),
        (["--prompt", "Hi", "--num-beams", "0"], "num_beams must be an integer >= 1, got 0."),
        (
            ["--prompt", "Hi", "--num-beams", "2", "--num-samples", "3"],
            "Beam search returns 1 to num_beams (2) hypotheses per prompt, 3 were asked for.",
        ),
        (
            ["--prompt", "Hi", "--num-beams", "2", "--temperature", "0.7", "--seed", "1"],
            "--num-beams searches for the most likely text, so it takes no --temperature, "
            "--seed (those choose among sampled tokens); drop them or --num-beams.",
        ),
        (
            ["--prompt", "Hi", "--length-penalty", "2"],
            "--length-penalty scores beam search's hypotheses; add --num-beams.",
        ),
        (["--prompt", "Hi", "--top-k", "1.5"], "top_k must be an integer >= 1 or 'none'"),
        (["--prompt", "Hi", "--interactive"], "Give either --prompt (repeatable) or --interactive"),
        (["--prompt", "Hi", "--mesh", "data=x"], "Bad mesh 'data=x'"),
        (["--prompt", "Hi", "--mesh", "data=2"], "Mesh 'data=2' does not divide the 1 devices"),
    ],
)
def test_bad_requests_fail_before_any_download(env, tmp_path, args, message):
    offline = {**env, "GPT2_BASE_URL": "http://127.0.0.1:9/gpt-2", "GPT2_MODELS_DIR": str(tmp_path)}
    result = gpt2(offline, "generate", *args)
    assert result.returncode == 2
    assert message in result.stderr and "Could not reach" not in result.stderr
    assert not any(tmp_path.iterdir())


def test_score_prints_the_python_apis_figures(env, model, tmp_path):
    text = TINY_SHAKESPEARE.read_text()[:1500]
    (tmp_path / "text.txt").write_text(text)
    args = ["score", "--file", str(tmp_path / "text.txt"), "--stride", "48", "--json"]
    figures = json.loads(ok(gpt2(env, *args)))
    expected = model.score(text, stride=48)
    assert figures["tokens"] == expected.n_tokens > 2 * model.config.n_ctx
    assert (figures["bytes"], figures["n_ctx"], figures["stride"]) == (len(text), 128, 48)
    for name in ("log_prob", "nll", "perplexity", "bits_per_byte"):
        assert figures[name] == pytest.approx(getattr(expected, name), rel=1e-5), name
    answer = ["score", "--text", " Paris.", "--context", "The capital of France is", "--json"]
    conditioned = model.score(" Paris.", context="The capital of France is")
    assert json.loads(ok(gpt2(env, *answer)))["log_prob"] == pytest.approx(
        conditioned.log_prob, rel=1e-5
    )
    short = model.score("Hello there.")
    assert ok(gpt2(env, "score", "--text", "Hello there.")).splitlines() == [
        f"{short.n_tokens} tokens (12 bytes) in windows of up to 128 tokens, 64 apart",
        f"log-prob       {short.log_prob:.4f} nats",
        f"mean NLL       {short.nll:.4f} nats/token",
        f"perplexity     {short.perplexity:.6g}",
        f"bits per byte  {short.bits_per_byte:.4f}",
    ]
    wide = gpt2(env, "score", "--text", "Hello there.", "--stride", "129")
    assert wide.returncode == 2
    assert "stride must be an integer from 1 to the context, 128, got 129." in wide.stderr


def test_int8_generate_and_score_print_the_python_apis_int8_results(env, model, tmp_path):
    """`--dtype int8` reaches the weights of both commands: greedy text and figures equal the
    Python API's with dtype="int8" (and the int8 log-prob is not the float32 one)."""
    int8 = api.load_model("124M", models_dir=env["GPT2_MODELS_DIR"], dtype="int8", progress=False)
    prompt = "The capital of France is"
    generate = ["generate", "--prompt", prompt, "--max-new-tokens", "12", "--temperature", "0"]
    expected = int8.generate(prompt, 12, temperature=0)[0]
    assert ok(gpt2(env, *generate, "--dtype", "int8")) == prompt + expected + "\n"
    text = " Paris, and the capital of Italy is Rome."
    figures = json.loads(ok(gpt2(env, "score", "--text", text, "--json", "--dtype", "int8")))
    assert figures["log_prob"] == pytest.approx(int8.score(text).log_prob, rel=1e-5)
    assert figures["log_prob"] != pytest.approx(model.score(text).log_prob, rel=1e-7)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--text", ""], "--text is empty."),
        (["--text", "Hi", "--stride", "0"], "--stride must be at least 1, got 0."),
        (["--text", "Hi", "--batch-size", "0"], "--batch-size must be at least 1, got 0."),
        (["--file", "no-such-file.txt"], "--file no-such-file.txt is not a file"),
        (
            ["--file", "{latin1}"],
            "latin1.txt is not UTF-8 text (unexpected end of data at byte 3).",
        ),
        (["--file", "{empty}"], "empty.txt is empty."),
        (["--text", "Hi", "--checkpoint", "out", "--model-size", "355M"], "does not apply to"),
    ],
)
def test_bad_score_requests_fail_before_any_download(env, tmp_path, args, message):
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    (tmp_path / "empty.txt").write_text("")
    args = [a.format(latin1=tmp_path / "latin1.txt", empty=tmp_path / "empty.txt") for a in args]
    models = tmp_path / "models"
    offline = {**env, "GPT2_BASE_URL": "http://127.0.0.1:9/gpt-2", "GPT2_MODELS_DIR": str(models)}
    result = gpt2(offline, "score", *args)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not models.exists()


def test_doctor_reports_a_backend_that_cannot_start_and_goes_on(env):
    report = ok(gpt2({**env, "JAX_PLATFORMS": "tpu"}, "doctor"))
    assert (
        "devices           unavailable (RuntimeError: Unable to initialize backend 'tpu'" in report
    )
    assert f"models dir        {env['GPT2_MODELS_DIR']}" in report


@pytest.mark.parametrize(
    ("missing", "args", "message"),
    [
        ("haiku", ["generate", "--prompt", "Hi", "--backend", "haiku"],
         "this needs haiku, which is not installed: pip install 'gpt2-jax[haiku]'."),
        ("optax", ["train", "--data-dir", "nowhere"],
         "this needs optax, which is not installed: pip install 'gpt2-jax[train]'."),
    ],
)  # fmt: skip
def test_a_missing_extra_is_named_with_its_install_command(env, missing, args, message):
    blocked = f"import sys; sys.modules[{missing!r}] = None; from shared.cli import main; "
    result = subprocess.run(
        [sys.executable, "-c", blocked + f"sys.exit(main({args!r}))"],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert message in result.stderr


def test_keras_on_another_backend_is_refused_in_one_sentence(env):
    result = gpt2(
        {**env, "KERAS_BACKEND": "torch"}, "generate", "--prompt", "Hi", "--backend", "keras"
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "runs Keras 3 on JAX only, but Keras is set to the 'torch' backend" in result.stderr


def test_offline_error_says_what_to_download_and_where(env, tmp_path):
    offline = {**env, "GPT2_BASE_URL": "http://127.0.0.1:9/gpt-2", "GPT2_MODELS_DIR": str(tmp_path)}
    result = gpt2(offline, "generate", "--prompt", "Hi", "--model-size", "774M")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "model.ckpt.index" in result.stderr and str(tmp_path) in result.stderr


def _subcommand_parsers() -> dict:
    from shared.cli import build_parser

    (commands,) = (a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return commands.choices


@pytest.mark.parametrize("command", sorted(_subcommand_parsers()))
def test_every_option_of_every_command_says_what_it_does(command):
    parser = _subcommand_parsers()[command]
    silent = [a.option_strings or a.dest for a in parser._actions if not (a.help or "").strip()]
    assert silent == []


def test_train_help_gives_each_settings_default():
    help_text = " ".join(_subcommand_parsers()["train"].format_help().split())
    assert (
        "--max-iters INT, --max_iters INT optimizer steps to train to (default: 5000)" in help_text
    )
    assert "(default: learning_rate / 10)" in help_text
    assert "(default: None)" not in help_text and "(default: )" not in help_text
