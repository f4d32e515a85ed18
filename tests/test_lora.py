"""LoRA fine-tuning: runs save only their adapters and a reference to the base, load and convert
as base + adapters, and bad settings are refused in one sentence (numerics: conformance)."""

from __future__ import annotations

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from shared import data, params, weights
from shared.cli import main as gpt2_cli
from shared.errors import GPT2Error
from shared.training.config import TrainingConfig
from shared.training.trainer import Trainer, resume_config
from shared.weights import runs
from tests.support import metrics
from tests.support.paths import BPE_DIR, TINY_SHAKESPEARE

LORA_RUN = {"batch_size": 2, "block_size": 16, "max_iters": 4, "eval_interval": 2,
            "save_interval": 2, "eval_iters": 1, "log_interval": 1, "warmup_iters": 0,
            "learning_rate": 1e-2, "lora_rank": 2, "lora_alpha": 4.0,
            "lora_targets": "c_attn,mlp_c_proj"}  # fmt: skip


@pytest.fixture(scope="module")
def base(tmp_path_factory, tiny_config):
    """(HF folder of tiny GPT-2 weights, GPT-2-tokenized data folder, its canonical tree)."""
    folder = tmp_path_factory.mktemp("lora")
    tree = params.init_params(tiny_config, jax.random.PRNGKey(3))
    weights.save_hf(tree, tiny_config, folder / "hf")
    (folder / "text.txt").write_text(TINY_SHAKESPEARE.read_text()[:10_000])
    data.prepare([folder / "text.txt"], folder / "data", "gpt2", bpe_dir=BPE_DIR)
    return folder / "hf", folder / "data", tree


def lora_config(base, out_dir, **overrides) -> TrainingConfig:
    hf, data_dir, _ = base
    values = {"data_dir": str(data_dir), "out_dir": str(out_dir), "init_from": str(hf), **LORA_RUN}
    return TrainingConfig(**{**values, **overrides})


@pytest.fixture(scope="module")
def lora_run(base, tmp_path_factory):
    """The out_dir of a finished 4-iteration LoRA run. Read-only."""
    out = tmp_path_factory.mktemp("lora_run") / "out"
    Trainer(lora_config(base, out)).run()
    return out


def test_a_lora_checkpoint_holds_only_the_adapters_and_names_its_base(lora_run, base):
    step, meta = runs.read_meta(lora_run)
    assert meta["lora"] == {
        "rank": 2, "alpha": 4.0, "targets": ["c_attn", "mlp_c_proj"],
        "base": {"source": str(base[0].resolve()), "sha256": meta["lora"]["base"]["sha256"]},
    }  # fmt: skip
    assert step == 4 and saved_params(lora_run) == {
        f"blocks/{i}/{target}/{part}"
        for i in range(2)
        for target in ("attn/c_attn", "mlp/c_proj")
        for part in ("lora_a", "lora_b")
    }


def saved_params(out_dir) -> set[str]:
    """The paths of the parameters a run's newest checkpoint holds."""
    step, _ = runs.read_meta(out_dir)
    state = ocp.args.Composite(state=ocp.args.StandardRestore())
    saved = runs.restore(out_dir, runs.LAST, step, state)["state"]["params"]
    return {
        jax.tree_util.keystr(path, simple=True, separator="/")
        for path, _ in jax.tree_util.tree_leaves_with_path(saved)
    }


def test_a_lora_run_loads_as_its_base_with_the_adapters_merged(lora_run, base):
    tuned = params.flatten(weights.resolve(lora_run).tree)
    start = params.flatten({**base[2], "wpe": base[2]["wpe"][:16]})
    changed = {path for path in start if not np.array_equal(tuned[path], start[path])}
    assert changed == {"blocks/attn/c_attn/w", "blocks/mlp/c_proj/w"}


def test_convert_merges_a_lora_run_only_when_asked(lora_run, tmp_path, capsys):
    assert gpt2_cli(["convert", str(lora_run), str(tmp_path / "hf"), "--to", "hf"]) == 2
    assert "is a LoRA run, which holds adapters over its base weights; add --merge-lora" in (
        capsys.readouterr().err
    )
    assert gpt2_cli(["convert", str(lora_run), str(tmp_path / "hf"), "--to", "hf",
                     "--merge-lora"]) == 0  # fmt: skip
    merged, _ = weights.load_weights(tmp_path / "hf")
    for path, value in params.flatten(weights.resolve(lora_run).tree).items():
        np.testing.assert_array_equal(params.flatten(merged)[path], value)


def test_adapters_over_other_base_weights_are_refused(lora_run):
    _, meta = runs.read_meta(lora_run)
    meta["lora"]["base"]["sha256"] = "0" * 64
    with pytest.raises(GPT2Error, match=r"were fine-tuned from .*hf with sha256 000000000000\.\.\., "
                       "but .*hf now holds other weights, which adapters do not fit"):  # fmt: skip
        runs.lora_base(lora_run, meta)


def test_a_resumed_lora_run_keeps_its_adapters(lora_run):
    with pytest.raises(GPT2Error, match=r"--lora-rank 8 differs from the checkpoint in .*, whose "
                       r"lora_rank is 2; a resumed run keeps its adapters"):  # fmt: skip
        resume_config(str(lora_run), {"lora_rank": 8})


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"lora_rank": 0}, "lora_rank must be at least 1, got 0."),
        ({"lora_targets": "c_attn,q_proj"}, "lora_targets must be a comma-separated list of "
         "c_attn, attn_c_proj, c_fc, mlp_c_proj, got 'c_attn,q_proj'."),
        ({"lora_targets": "c_proj"}, r"got 'c_proj' \(GPT-2 has two: attn_c_proj or mlp_c_proj\)"),
        ({"init_from": "scratch"}, "LoRA fine-tunes existing weights; give init_from"),
        ({"lora_rank": None}, "lora_alpha scales LoRA adapters; give lora_rank too."),
        ({"lora_alpha": 0.0}, "lora_alpha must be a finite number > 0, got 0.0."),
        ({"mesh": "data=1"}, "LoRA trains on one device; drop --mesh"),
        ({"compute_dtype": "int8"}, "compute_dtype must be float32 or bfloat16, got 'int8'"),
    ],
)  # fmt: skip
def test_bad_lora_settings_fail_with_one_sentence(base, tmp_path, overrides, message):
    with pytest.raises(GPT2Error, match=message):
        lora_config(base, tmp_path, **overrides)


def test_a_rank_beyond_the_smaller_side_of_a_target_is_refused(base, tmp_path):
    with pytest.raises(GPT2Error, match=r"lora_rank must be between 1 and 32 .* 32-wide model"):
        Trainer(lora_config(base, tmp_path, lora_rank=33))


@pytest.mark.slow
def test_keras_fit_trains_the_adapters_the_shared_trainer_trains(lora_run, base, tmp_path):
    """`model.fit` with Keras' own `Dense.enable_lora`: the same losses, and a checkpoint of the
    adapters alone (the base is frozen, so nothing else is trained or saved)."""
    config = lora_config(base, tmp_path / "fit", backend="keras", keras_fit=True)
    from keras_impl.fit import KerasFit

    KerasFit(config).run()
    ours, theirs = metrics.losses(tmp_path / "fit"), metrics.losses(lora_run)
    assert ours.keys() == theirs.keys() == {1, 2, 3, 4}
    for i, (train_loss, val_loss) in theirs.items():
        assert abs(ours[i][0] / train_loss - 1) < 1e-4
        assert val_loss is None or abs(ours[i][1] / val_loss - 1) < 1e-4
    assert saved_params(tmp_path / "fit") == {
        f"h{i}/{target}/lora_kernel_{part}"
        for i in range(2)
        for target in ("attn/c_attn", "mlp/c_proj")
        for part in "ab"
    }
