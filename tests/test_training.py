"""The shared trainer: resumes, fine-tuning OpenAI weights, clear errors (runs interrupted by
signals are in tests/faults)."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from shared import api, data, params, weights
from shared.cli import build_parser
from shared.cli import main as gpt2_cli
from shared.cli import train as train_command
from shared.errors import GPT2Error
from shared.tokenizer import RANKS_NAME, Tokenizer
from shared.training import checkpoints
from shared.training.config import TrainingConfig, given_values
from shared.training.optimizer import learning_rate_schedule
from shared.training.trainer import Trainer, changed_settings, resume_config
from shared.weights import runs
from tests.support import metrics
from tests.support.corpus import prepared_characters
from tests.support.paths import BPE_DIR, TINY_SHAKESPEARE
from tests.support.wandb_offline import logged_history, offline_runs

TINY_MODEL = {"n_layer": 2, "n_head": 2, "n_embd": 32, "block_size": 32}


@pytest.fixture(scope="module")
def char_data(tmp_path_factory):
    return prepared_characters(tmp_path_factory.mktemp("shakespeare_char"))


def _config(data_dir, out_dir, /, **overrides):
    values = {"data_dir": str(data_dir), "out_dir": str(out_dir), "batch_size": 4, "max_iters": 40,
              "learning_rate": 3e-3, "min_lr": 3e-4, "warmup_iters": 5, "eval_interval": 20,
              "eval_iters": 2, "log_interval": 1, "save_interval": 10, **TINY_MODEL}  # fmt: skip
    return TrainingConfig(**{**values, **overrides})


def _final_params(out_dir):
    tree, _, meta = runs.load_for_inference(out_dir)
    return meta["step"], tree


def _train_command(config: TrainingConfig, *extra):
    flags = [
        f"--{k}={v}"
        for k, v in config.to_dict().items()
        if v is not None and not isinstance(v, bool)
    ]
    return [sys.executable, "-m", "gpt2", "train", *flags, *extra]


@pytest.mark.slow
def test_a_run_with_dropout_learns_and_is_not_the_run_without(char_data, tmp_path):
    Trainer(_config(char_data, tmp_path / "dropout", dropout=0.1, max_iters=30)).run()
    Trainer(_config(char_data, tmp_path / "plain", max_iters=1, eval_iters=1)).run()
    losses = metrics.losses(tmp_path / "dropout")
    assert losses[30][0] < losses[1][0] - 0.5
    assert losses[1][0] != metrics.losses(tmp_path / "plain")[1][0]


@pytest.mark.slow
def test_best_checkpoint_follows_the_validation_loss(char_data, tmp_path):
    result = Trainer(_config(char_data, tmp_path, max_iters=40)).run()
    _, meta = checkpoints.read_meta(tmp_path, checkpoints.BEST)
    losses = metrics.losses(tmp_path)
    assert meta["best_val_loss"] == min(v for _, v in losses.values() if v is not None)
    assert result["iter"] == 40


@pytest.fixture(scope="module")
def finished_run(char_data, tmp_path_factory):
    """The out_dir of a finished 20-iteration run (evaluated and saved at 10 and 20). Read-only:
    tests that continue it copy it first."""
    out = tmp_path_factory.mktemp("finished") / "out"
    Trainer(_config(char_data, out, max_iters=20, eval_interval=10)).run()
    return out


def _copy(run, tmp_path):
    return shutil.copytree(run, tmp_path / "out")


@pytest.mark.slow
def test_generate_from_a_checkpoint_on_the_backend_asked_for(finished_run):
    def generate(*args):
        command = [sys.executable, "-m", "gpt2", "generate", "--checkpoint", str(finished_run),
                   "--max-new-tokens", "8", "--temperature", "0", *args]  # fmt: skip
        return subprocess.run(command, capture_output=True, text=True, timeout=300)

    own = generate("--prompt", "ROMEO:")
    assert own.returncode == 0, own.stderr
    assert own.stdout.startswith("ROMEO:") and len(own.stdout) > len("ROMEO:\n")
    on_haiku = api.load_checkpoint(finished_run, "haiku")
    assert on_haiku.backend.name == "haiku"
    assert own.stdout == "ROMEO:" + on_haiku.generate("ROMEO:", 8, temperature=0)[0] + "\n"
    other = generate("--prompt", "ROMEO:", "--backend", "torch")
    assert other.returncode == 2 and "Unknown backend 'torch'" in other.stderr
    sized = generate("--prompt", "ROMEO:", "--model-size", "355M")
    assert (
        sized.returncode == 2 and "--model-size 355M does not apply to --checkpoint" in sized.stderr
    )
    unknown = generate("--prompt", "ROMEO: café")
    assert unknown.returncode == 2 and "Traceback" not in unknown.stderr
    assert "characters outside this model's alphabet ('é')" in unknown.stderr


def test_a_run_loads_for_inference_without_the_training_package(finished_run):
    """Reading a run's checkpoint is weights I/O (`shared.weights.runs`): a model loaded from it
    generates without `shared.training` ever being imported."""
    script = (
        "import sys, gpt2; "
        f"model = gpt2.load_checkpoint({str(finished_run)!r}); "
        "model.generate('ROMEO:', 2, temperature=0); "
        "print(sorted(m for m in sys.modules if m.startswith('shared.training')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.slow
def test_score_a_checkpoint_on_held_out_text(finished_run):
    """`gpt2 score --checkpoint`: the character model's figures, as the Python API computes
    them, on text from its validation split, which it finds likelier than uniform guessing."""
    text = TINY_SHAKESPEARE.read_text()[-2000:]  # the end of the corpus: its validation split
    model = api.load_checkpoint(finished_run)

    command = [sys.executable, "-m", "gpt2", "score", "--checkpoint", str(finished_run),
               "--text", text, "--json"]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    held_out = json.loads(result.stdout)
    assert held_out["tokens"] == len(text) - 1 and held_out["n_ctx"] == model.config.n_ctx
    assert held_out["nll"] == pytest.approx(model.score(text).nll, rel=1e-5)
    assert held_out["nll"] < math.log(model.config.n_vocab) - 0.3


@pytest.mark.slow
def test_a_resumed_run_replaces_best_only_with_a_better_model(finished_run, tmp_path):
    out = _copy(finished_run, tmp_path)
    best = checkpoints.read_meta(out, checkpoints.BEST)
    worse = {"max_iters": 22, "learning_rate": 1.0, "min_lr": 1.0}  # two steps at lr 1 spoil it
    Trainer(resume_config(str(out), worse)).run()
    assert metrics.records(out)[22]["val_loss"] > best[1]["best_val_loss"]
    assert checkpoints.read_meta(out, checkpoints.BEST) == best
    # out/best names the best model wherever a checkpoint is read: generate, convert, Python.
    (last, _, last_meta), (_, _, kept_meta) = (
        runs.load_for_inference(out),
        runs.load_for_inference(out / "best"),
    )
    assert (last_meta["step"], kept_meta["step"]) == (22, 20)
    assert gpt2_cli(["convert", str(out / "best"), str(tmp_path / "best.safetensors"),
                     "--to", "canonical"]) == 0  # fmt: skip
    converted, _ = weights.load_canonical(tmp_path / "best.safetensors")
    for saved, loaded, spoilt in zip(*map(jax.tree.leaves, (_final_params(finished_run)[1],
                                          converted, last)), strict=True):  # fmt: skip
        np.testing.assert_array_equal(saved, loaded)
        assert not np.array_equal(saved, spoilt)
    sample = [
        api.load_checkpoint(run).generate("ROMEO:", 8, temperature=0)[0]
        for run in (out / "best", finished_run)
    ]
    assert sample[0] == sample[1]


def _steps(out_dir, which=checkpoints.LAST):
    return sorted(int(p.name) for p in (out_dir / which).iterdir() if p.name.isdigit())


@pytest.mark.slow
def test_a_run_killed_between_its_best_and_its_last_save_resumes(finished_run, tmp_path):
    """`best/` saves step N before `checkpoints/` does: a kill between the two leaves best/ ahead."""
    out = _copy(finished_run, tmp_path)
    assert _steps(out, checkpoints.BEST) == [20] and _steps(out) == [10, 20]
    best = checkpoints.read_meta(out, checkpoints.BEST)
    shutil.rmtree(out / checkpoints.LAST / "20")
    assert Trainer(resume_config(str(out), {})).run()["iter"] == 20
    assert _steps(out) == [10, 20]
    assert checkpoints.read_meta(out, checkpoints.BEST) == best  # the replay was no better


@pytest.mark.slow
def test_every_save_interval_is_saved_whatever_the_log_interval(char_data, tmp_path):
    config = _config(char_data, tmp_path, max_iters=20, log_interval=10, eval_interval=20,
                     save_interval=5, keep_last=10)  # fmt: skip
    Trainer(config).run()
    assert _steps(tmp_path) == [5, 10, 15, 20]
    assert metrics.logged_iters(tmp_path) == [10, 20]


def test_a_damaged_checkpoint_is_named_with_the_step_to_go_back_to(finished_run, tmp_path):
    out = _copy(finished_run, tmp_path)
    shutil.rmtree(out / checkpoints.LAST / "20" / "state")
    with pytest.raises(
        GPT2Error,
        match=rf"^Checkpoint {re.escape(str(out.resolve()))}/checkpoints/20 is damaged or "
        r"incomplete \(.*\); delete that folder to go back to step 10, the newest one before it\.$",
    ):
        Trainer(resume_config(str(out), {}))


@pytest.mark.slow
def test_a_longer_resumed_run_stays_at_min_lr_past_the_old_end(finished_run, tmp_path):
    out = _copy(finished_run, tmp_path)
    trained = TrainingConfig.from_dict(checkpoints.read_meta(out)[1]["training"])
    assert trained.lr_decay_iters is None
    same, longer = resume_config(str(out), {}), resume_config(str(out), {"max_iters": 30})
    assert longer.out_dir == str(out)  # the copy continues, not the run it was copied from
    as_trained, resumed = learning_rate_schedule(trained), learning_rate_schedule(same)
    assert [float(resumed(i)) for i in range(21)] == [float(as_trained(i)) for i in range(21)]
    Trainer(longer).run()
    lrs = {i: record["lr"] for i, record in metrics.records(out).items()}
    assert lrs[20] > trained.min_lr  # the lr of iteration 20 is that of step 19
    assert all(lrs[i] == pytest.approx(trained.min_lr) for i in range(21, 31))
    again = resume_config(str(out), {"max_iters": 40, "lr_decay_iters": 40})
    assert float(learning_rate_schedule(again)(30)) > trained.min_lr


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"n_layer": 3}, "--n-layer 3 differs from the checkpoint in {out}, whose n_layer is 2;"),
        ({"n_head": 4}, "--n-head 4 differs from the checkpoint in {out}, whose n_head is 2;"),
        ({"n_embd": 64}, "--n-embd 64 differs from the checkpoint in {out}, whose n_embd is 32;"),
        ({"block_size": 64}, "--block-size 64 differs from the checkpoint in {out}, whose block_size is 32;"),
    ],
)  # fmt: skip
def test_a_resume_refuses_another_model_shape(finished_run, overrides, message):
    with pytest.raises(GPT2Error, match=re.escape(message.format(out=finished_run))):
        resume_config(str(finished_run), overrides)


def test_a_resume_refuses_a_model_size_of_another_shape(finished_run):
    with pytest.raises(
        GPT2Error,
        match=re.escape(
            f"--model-size gpt2 gives 12 layers, 12 heads, 768 wide, but the checkpoint in "
            f"{finished_run} has 2 layers, 2 heads, 32 wide;"
        ),
    ):
        resume_config(str(finished_run), {"model_size": "gpt2"})


def test_a_resume_accepts_its_own_shape_given_again(finished_run):
    same = resume_config(str(finished_run), {})
    assert resume_config(str(finished_run), TINY_MODEL) == same
    assert resume_config(str(finished_run), {**TINY_MODEL, "model_size": "355M"}).n_layer == 2


def test_a_resume_names_the_settings_it_changes(finished_run, capsys):
    assert changed_settings(resume_config(str(finished_run), {})) == []
    config = _command_line_config(
        "--init-from", "resume", "--out-dir", str(finished_run), "--seed", "7",
        "--max-iters", "30", "--eval-only",
    )  # fmt: skip
    assert (config.seed, config.max_iters) == (7, 30)
    assert capsys.readouterr().err == (
        f"Resuming {finished_run} with settings changed from its run: max_iters 20 -> 30, "
        "seed 1337 -> 7.\n"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("tiny corpus " * 100, r"has vocab_size 11, but the data of the checkpoint has 65;"),
        (None, r"has another alphabet than the data of the checkpoint \('é' added, 'z' missing\);"),
    ],
)
def test_a_resume_refuses_data_prepared_another_way(
    finished_run, char_data, tmp_path, text, message
):
    if text is None:  # Shakespeare's 65 characters, one of them swapped: the same vocabulary size
        alphabet = json.loads((char_data / "meta.json").read_text())["alphabet"]
        text = "".join(alphabet).replace("z", "é") * 10
    (tmp_path / "other.txt").write_text(text)
    data.prepare([tmp_path / "other.txt"], tmp_path / "other", "char")
    config = resume_config(
        str(finished_run), {"data_dir": str(tmp_path / "other"), "eval_only": True}
    )
    with pytest.raises(GPT2Error, match=message):
        Trainer(config)


def test_a_new_run_refuses_an_out_dir_that_holds_checkpoints(finished_run, char_data):
    before = _files(finished_run)
    with pytest.raises(
        GPT2Error,
        match="already holds a training run's checkpoints; continue it with --init-from resume "
        "or give another --out-dir",
    ):
        Trainer(_config(char_data, finished_run))
    Trainer(_config(char_data, finished_run, eval_only=True, eval_iters=1)).run()  # writes nothing
    assert _files(finished_run) == before


def _command_line_config(*flags):
    args = build_parser().parse_args(["train", *flags])
    return train_command.run_config(given_values(args, args.config))


def test_init_from_resume_in_a_config_file_resumes_like_the_flag(finished_run, char_data, tmp_path):
    (tmp_path / "resume.toml").write_text(
        f'init_from = "resume"\nout_dir = "{finished_run}"\nmax_iters = 30\n'
    )
    from_file = _command_line_config("--config", str(tmp_path / "resume.toml"))
    from_flags = _command_line_config(
        "--init-from", "resume", "--out-dir", str(finished_run), "--max-iters", "30"
    )
    assert from_file == from_flags == resume_config(str(finished_run), {"max_iters": 30})
    assert (from_file.data_dir, from_file.n_layer, from_file.lr_decay_iters) == (
        str(char_data),
        2,
        20,
    )


@pytest.mark.slow
def test_remat_trains_the_run_it_would_train_without(char_data, tmp_path):
    config = _command_line_config(
        "--data-dir", str(char_data), "--out-dir", str(tmp_path / "remat"), "--remat",
        "--backend", "haiku", "--dropout", "0.1", "--gradient-accumulation-steps", "2",
        *(f"--{k.replace('_', '-')}={v}" for k, v in TINY_MODEL.items()),
    )  # fmt: skip
    short = {"max_iters": 4, "eval_interval": 4, "eval_iters": 1, "log_interval": 1}
    trainers = [
        Trainer(config.replace(**short)),
        Trainer(config.replace(remat=False, out_dir=str(tmp_path / "plain"), **short)),
    ]
    products = []
    for trainer in trainers:
        state = trainer.state
        lowered = trainer._train_step.lower(
            state.params, state.opt_state, trainer.device_batches(0), state.step
        )
        products.append(lowered.compile().as_text().count(" dot("))
        trainer.run()
    assert config.remat and products[0] > products[1]  # the blocks run again in the backward pass
    remat, plain = metrics.losses(tmp_path / "remat"), metrics.losses(tmp_path / "plain")
    assert sorted(remat) == sorted(plain) == [1, 2, 3, 4]
    for step in plain:
        assert remat[step][0] == pytest.approx(plain[step][0], rel=1e-5)


def test_a_missing_config_file_is_an_error_also_when_resuming(tmp_path, capsys):
    missing = tmp_path / "missing.toml"
    assert gpt2_cli(["train", "--init-from", "resume", "--config", str(missing)]) == 2
    assert f"Config file {missing} does not exist." in capsys.readouterr().err


def _files(folder):
    return {path: path.stat().st_mtime_ns for path in folder.rglob("*")}


def _uniform_loss(data_dir):
    return math.log(json.loads((data_dir / "meta.json").read_text())["vocab_size"])


@pytest.mark.slow
def test_eval_only_of_a_checkpoint_gives_its_logged_losses_and_writes_nothing(char_data, tmp_path):
    Trainer(_config(char_data, tmp_path, max_iters=20)).run()
    logged_val = metrics.losses(tmp_path)[20][1]
    before = _files(tmp_path)
    result = Trainer(resume_config(str(tmp_path), {"eval_only": True})).run()
    on_a_mesh = Trainer(resume_config(str(tmp_path), {"eval_only": True, "mesh": "data=1,fsdp=1"}))
    assert on_a_mesh.run() == result
    assert result["iter"] == 20
    assert result["val_loss"] == logged_val
    assert 0 < result["train_loss"] < _uniform_loss(char_data) - 0.5  # it learnt something
    assert _files(tmp_path) == before


def test_eval_only_from_scratch_on_the_command_line(char_data, tmp_path):
    config = _config(char_data, tmp_path / "never")
    result = subprocess.run(
        [*_train_command(config), "--eval-only"], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    train_loss, val_loss = (float(part.split("=")[1]) for part in result.stdout.split()[2:4])
    assert result.stdout.startswith("iter 0: train_loss=")
    uniform = _uniform_loss(char_data)
    assert abs(train_loss - uniform) < 0.3 and abs(val_loss - uniform) < 0.3
    assert not (tmp_path / "never").exists()


@pytest.mark.slow
def test_fine_tuning_openai_weights_then_export_to_hf(openai_server, tmp_path, monkeypatch):
    monkeypatch.setenv("GPT2_BASE_URL", openai_server.base_url)
    monkeypatch.setenv("GPT2_MODELS_DIR", str(tmp_path / "models"))
    text = tmp_path / "text.txt"
    text.write_text(TINY_SHAKESPEARE.read_text()[:20_000])
    data.prepare([text], tmp_path / "data", "gpt2", bpe_dir=BPE_DIR)
    config = _config(tmp_path / "data", tmp_path / "ft", init_from="124M", max_iters=6, learning_rate=1e-4,
                     min_lr=1e-5, warmup_iters=1, eval_interval=3, save_interval=3)  # fmt: skip
    start, _, _ = weights.load_pretrained("124M")
    evaluation = Trainer(config.replace(eval_only=True))
    assert evaluation.state.opt_state is None  # no AdamW moments to evaluate
    assert math.isfinite(evaluation.run()["val_loss"])
    Trainer(config).run()
    tree, model_config = weights.load_weights(tmp_path / "ft")
    assert model_config.n_ctx == 32 and model_config.n_embd == 32
    moved = np.abs(
        np.asarray(tree["blocks"]["mlp"]["c_fc"]["w"]) - start["blocks"]["mlp"]["c_fc"]["w"]
    ).max()
    assert 0 < moved < 0.01
    trained = api.load_checkpoint(tmp_path / "ft")
    assert trained.tokenizer.encode("To be") == Tokenizer(BPE_DIR).encode("To be")
    assert (tmp_path / "models" / "124M" / RANKS_NAME).is_file()
    weights.convert(tmp_path / "ft", tmp_path / "hf", "hf")
    exported, _ = weights.load_hf(tmp_path / "hf")
    for path, value in params.flatten(tree).items():
        np.testing.assert_array_equal(params.flatten(exported)[path], value)


def test_fine_tuning_starts_from_weights_that_convert_reads(tiny_config, char_data, tmp_path):
    """`init_from` a path: HF weights (here as transformers would save them) start the run,
    cropped to block_size, and a run's out_dir can start another run."""
    tree = params.init_params(tiny_config, jax.random.PRNGKey(3))
    weights.save_hf(tree, tiny_config, tmp_path / "hf")
    text = tmp_path / "text.txt"
    text.write_text(TINY_SHAKESPEARE.read_text()[:20_000])
    data.prepare([text], tmp_path / "data", "gpt2", bpe_dir=BPE_DIR)
    config = _config(tmp_path / "data", tmp_path / "ft", init_from=str(tmp_path / "hf"),
                     max_iters=2, eval_interval=2, save_interval=2, learning_rate=1e-4, min_lr=1e-5)  # fmt: skip

    def starting_tree(trainer):
        return params.flatten(
            trainer.backend.to_canonical(trainer.state.params, trainer.model_config)
        )

    start = starting_tree(Trainer(config.replace(eval_only=True)))
    for path, value in params.flatten({**tree, "wpe": tree["wpe"][:32]}).items():
        np.testing.assert_array_equal(start[path], value)
    Trainer(config).run()
    tuned, tuned_config = weights.load_weights(tmp_path / "ft")
    assert tuned_config == dataclasses.replace(tiny_config, n_ctx=32)
    assert not np.array_equal(tuned["blocks"]["mlp"]["c_fc"]["w"], start["blocks/mlp/c_fc/w"])
    again = starting_tree(
        Trainer(config.replace(init_from=str(tmp_path / "ft"), out_dir=str(tmp_path / "ft2")))
    )
    for path, value in params.flatten(tuned).items():
        np.testing.assert_array_equal(again[path], value)
    with pytest.raises(
        GPT2Error,
        match=r"weights with its 50257 token ids; .*hf has 50257 and .* uses the char tokenizer",
    ):
        Trainer(config.replace(data_dir=str(char_data), out_dir=str(tmp_path / "chars")))


def test_a_character_run_fine_tunes_from_its_out_dir_on_data_read_the_same_way(
    finished_run, char_data, tmp_path
):
    """A character-level model has no GPT-2 ids: it fine-tunes, in full or with LoRA, from its
    run's out_dir on data with the run's alphabet (new text prepared with `alphabet_from` the
    run), and refuses data read another way."""
    config = _config(char_data, tmp_path / "ft", init_from=str(finished_run), max_iters=2,
                     eval_interval=2, save_interval=2, block_size=16)  # fmt: skip
    start = Trainer(config.replace(eval_only=True))
    tree = params.flatten(start.backend.to_canonical(start.state.params, start.model_config))
    _, base = _final_params(finished_run)
    for path, value in params.flatten({**base, "wpe": base["wpe"][:16]}).items():
        np.testing.assert_array_equal(tree[path], value)
    lora = config.replace(out_dir=str(tmp_path / "lora"), lora_rank=2, lora_alpha=4.0)
    Trainer(lora).run()
    tuned = weights.resolve(tmp_path / "lora")
    assert tuned.tokenizer.alphabet == json.loads((char_data / "meta.json").read_text())["alphabet"]
    assert tuned.config.n_ctx == 16
    (tmp_path / "other.txt").write_text("tiny corpus " * 100)
    data.prepare([tmp_path / "other.txt"], tmp_path / "other", "char")
    with pytest.raises(
        GPT2Error, match=r"has vocab_size 11, but the data of the run in .*out has 65; train it"
    ):
        Trainer(config.replace(data_dir=str(tmp_path / "other")))
    data.prepare([tmp_path / "other.txt"], tmp_path / "ids", "char", alphabet_from=finished_run)
    Trainer(config.replace(data_dir=str(tmp_path / "ids"), eval_only=True)).run()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"block_size": 2000}, "has 1,080 tokens, fewer than one block of 2000"),
        (
            {"init_from": "/nonexistent/weights"},
            r"init_from must be scratch, resume, a GPT-2 size \(124M, 355M, 774M, 1558M\) or the "
            "path of weights to fine-tune, got '/nonexistent/weights', which is none of them.",
        ),
        ({"data_dir": "/nonexistent/data"}, "has no prepared train data"),
        ({"init_from": "resume"}, r"out does not exist, so it holds no training run to resume"),
        ({"dropout": 1.0}, r"dropout must be in \[0, 1\), got 1.0"),
        (
            {"backend": "jaxx", "data_dir": "/nonexistent/data"},
            "backend must be one of functional, haiku, keras, got 'jaxx'",
        ),
    ],
)
def test_bad_runs_fail_with_one_sentence(tmp_path, overrides, message):
    (tmp_path / "small.txt").write_text("tiny corpus " * 100)
    data.prepare([tmp_path / "small.txt"], tmp_path / "small", "char")
    with pytest.raises(GPT2Error, match=message):
        Trainer(_config(tmp_path / "small", tmp_path / "out", **overrides))


def test_a_run_folder_that_is_a_file_is_refused_before_training(tmp_path):
    (tmp_path / "small.txt").write_text("tiny corpus " * 100)
    data.prepare([tmp_path / "small.txt"], tmp_path / "small", "char")
    with pytest.raises(GPT2Error, match=r"Cannot write out_dir .*small.txt \(it is a file\)"):
        Trainer(_config(tmp_path / "small", tmp_path / "small.txt"))


def test_unknown_keys_in_a_config_file_are_named(tmp_path):
    (tmp_path / "run.toml").write_text("batch_size = 8\nlearning_rat = 1e-3\n")
    with pytest.raises(GPT2Error, match=r"Unknown key\(s\) \['learning_rat'\] in .*run.toml"):
        TrainingConfig.from_file(tmp_path / "run.toml")


def test_config_file_and_flags_agree_and_flags_win(tmp_path):
    (tmp_path / "run.json").write_text(json.dumps({"batch_size": 8, "max_iters": 100}))
    config = _command_line_config("--config", str(tmp_path / "run.json"), "--max_iters", "7")
    assert config == TrainingConfig(batch_size=8, max_iters=7)


def test_flags_are_merged_into_the_config_file_before_it_is_checked(tmp_path):
    (tmp_path / "lr.toml").write_text("min_lr = 1e-3\n")
    (tmp_path / "fit.json").write_text(json.dumps({"keras_fit": True}))
    lr = _command_line_config("--config", str(tmp_path / "lr.toml"), "--learning-rate", "1e-2")
    fit = _command_line_config("--config", str(tmp_path / "fit.json"), "--backend", "keras")
    assert (lr.min_lr, lr.learning_rate) == (1e-3, 1e-2)
    assert (fit.keras_fit, fit.backend) == (True, "keras")


def test_a_config_file_suffix_is_read_in_any_case(tmp_path):
    (tmp_path / "up.TOML").write_text("max_iters = 7\n")
    (tmp_path / "up.Json").write_text('{"max_iters": 8}')
    assert TrainingConfig.from_file(tmp_path / "up.TOML").max_iters == 7
    assert TrainingConfig.from_file(tmp_path / "up.Json").max_iters == 8


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("c.yaml", "max_iters: 7\n", "has the suffix '.yaml'; use one of .toml, .json."),
        ("run", "max_iters = 7\n", "has the suffix ''; use one of .toml, .json."),
        ("list.json", "[1, 2]", "must hold an object of TrainingConfig fields, not a list."),
        ("bad.toml", "max_iters = \n", "is not valid TOML"),
    ],
)
def test_bad_config_files_fail_with_one_sentence(tmp_path, name, text, message):
    (tmp_path / name).write_text(text)
    with pytest.raises(
        GPT2Error, match=re.escape(f"Config file {tmp_path / name} ") + ".*" + re.escape(message)
    ):
        TrainingConfig.from_file(tmp_path / name)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("grad_clip", math.nan, "grad_clip must be a finite number >= 0 (0 turns it off), got nan."),
        ("beta1", 1.5, "beta1 must be in [0, 1), got 1.5."),
        ("beta2", -1.0, "beta2 must be in [0, 1), got -1.0."),
        ("weight_decay", -3.0, "weight_decay must be a finite number >= 0, got -3.0."),
        ("warmup_iters", -10, "warmup_iters must be at least 0, got -10."),
        ("lr_decay_iters", -5, "lr_decay_iters must be at least 1, got -5."),
        ("learning_rate", math.inf, "learning_rate must be a finite number > 0, got inf."),
        ("min_lr", 1e-3, "min_lr must be at most learning_rate (0.0006), got 0.001."),
        ("n_layer", 0, "n_layer must be at least 1, got 0."),
        ("n_head", 0, "n_head must be at least 1, got 0."),
        ("n_embd", 0, "n_embd must be at least 1, got 0."),
    ],
)  # fmt: skip
def test_values_out_of_range_fail_with_one_sentence(field, value, message):
    with pytest.raises(GPT2Error, match=re.escape(message)):
        TrainingConfig(**{field: value})


def test_min_lr_defaults_to_a_tenth_of_the_learning_rate():
    assert TrainingConfig().min_lr == pytest.approx(6e-5)
    assert TrainingConfig(learning_rate=1e-5).min_lr == pytest.approx(1e-6)  # a fine-tune's rate
    assert TrainingConfig(learning_rate=1e-5, min_lr=0.0).min_lr == 0.0


def test_values_at_the_edges_of_their_ranges_are_accepted():
    edges = TrainingConfig(grad_clip=0.0, beta1=0.0, weight_decay=0.0, warmup_iters=0, min_lr=0.0,
                           lr_decay_iters=1, n_layer=1, n_head=1, n_embd=1)  # fmt: skip
    assert edges.model_config(65).n_layer == 1


def test_a_run_diverging_before_its_first_save_says_no_checkpoint_was_written(char_data, tmp_path):
    config = _config(char_data, tmp_path, learning_rate=1e9, min_lr=1e8, grad_clip=1e30, warmup_iters=1,
                     max_iters=200, save_interval=200)  # fmt: skip
    with pytest.raises(
        GPT2Error, match=r"stopped without saving, and no checkpoint was written to .*\. Lower"
    ):
        Trainer(config).run()
    assert checkpoints.latest_step(tmp_path) is None


def test_a_diverging_run_stops_and_keeps_the_last_good_checkpoint(char_data, tmp_path):
    config = _config(char_data, tmp_path, learning_rate=1e9, min_lr=1e8, grad_clip=1e30, warmup_iters=1,
                     max_iters=200, save_interval=1)  # fmt: skip
    with pytest.raises(
        GPT2Error,
        match=r"Training diverged at iter \d+: the (loss|parameters) became non-finite.*stopped without saving",
    ):
        Trainer(config).run()
    step, tree = _final_params(tmp_path)
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(tree))
    assert step >= 1


@pytest.mark.slow
def test_tensorboard_events_are_written_when_asked(char_data, tmp_path):
    Trainer(_config(char_data, tmp_path, max_iters=4, eval_interval=2, tensorboard=True)).run()
    events = list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0


@pytest.mark.slow
def test_weights_and_biases_without_a_login_is_one_sentence(char_data, tmp_path):
    """In a process of its own: wandb keeps its settings (online here) for the whole process."""
    env = {k: v for k, v in os.environ.items() if k not in ("WANDB_MODE", "WANDB_API_KEY")}
    home = str(tmp_path / "wandb-home")  # no ~/.netrc key either
    env |= {"HOME": home, "WANDB_CONFIG_DIR": home, "WANDB_CACHE_DIR": home, "WANDB_SILENT": "true"}
    config = _config(char_data, tmp_path / "out", max_iters=1, use_wandb=True)
    result = subprocess.run(
        _train_command(config, "--use-wandb"), env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "W&B could not start (" in result.stderr and "run `wandb login`, or set" in result.stderr
    assert not (tmp_path / "out" / "checkpoints").exists()  # nothing of the run is left half made


@pytest.mark.slow
def test_weights_and_biases_logs_offline_when_asked(char_data, tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "wandb-home"))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "out"
    Trainer(_config(char_data, out, max_iters=4, eval_interval=2, use_wandb=True)).run()
    wandb.teardown()  # waits for W&B's service process to write out the run file (once, on a
    # loaded machine, the file held no history yet when read right after `finish`)
    (run_file,) = offline_runs(out / "wandb")
    history = logged_history(run_file)
    logged = metrics.logged(out)
    assert [h["_step"] for h in history] == [r["iter"] for r in logged] == [1, 2, 3, 4]
    assert all("val_loss" in logged[i] for i in (1, 3))
    for h, record in zip(history, logged, strict=True):
        for name, value in record.items():
            assert h[name if name != "iter" else "_step"] == pytest.approx(value), name
