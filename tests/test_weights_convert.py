"""Converters between OpenAI's TF checkpoint, our canonical file and Hugging Face safetensors."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat

import jax
import numpy as np
import pytest
import safetensors.numpy

from shared.cli import main
from shared.config import GPT2Config
from shared.errors import GPT2Error
from shared.params import canonical_shapes, flatten, unflatten
from shared.weights import (
    CANONICAL_NAME,
    convert,
    detect_format,
    load_canonical,
    load_hf,
    load_pretrained,
    load_tf_checkpoint,
    load_weights,
    save_canonical,
    save_hf,
)
from shared.weights._files import ALIGNMENT, read_safetensors
from shared.weights.hf import config_from_hf, hf_config
from shared.weights.openai import CHECKPOINT_FILES
from tests.support.hf_checkpoint import hf_tensors_by_hand, write_hf_config_by_hand
from tests.support.openai_server import unused_port

DATA = "model.ckpt.data-00000-of-00001"


def random_tree(config: GPT2Config, seed: int = 0) -> dict:
    """A canonical tree with every leaf random (so a swapped or transposed leaf shows)."""
    rng = np.random.default_rng(seed)
    shapes = canonical_shapes(config)
    return unflatten({k: rng.standard_normal(s, dtype=np.float32) for k, s in shapes.items()})


def assert_trees_equal(actual: dict, expected: dict) -> None:
    actual, expected = flatten(actual), flatten(expected)
    assert sorted(actual) == sorted(expected)
    for path in expected:
        assert actual[path].dtype == expected[path].dtype, path
        np.testing.assert_array_equal(actual[path], expected[path], err_msg=path)


def expected_canonical(openai_arrays: dict, n_layer: int) -> dict:
    """The canonical tree the OpenAI arrays should become, built with numpy by hand."""

    def stack(name: str) -> np.ndarray:
        layers = [openai_arrays[f"model/h{i}/{name}"] for i in range(n_layer)]
        return np.stack([layer[0] if name.endswith("/w") else layer for layer in layers])

    return {
        "wte": openai_arrays["model/wte"],
        "wpe": openai_arrays["model/wpe"],
        "blocks": {
            "ln_1": {"g": stack("ln_1/g"), "b": stack("ln_1/b")},
            "attn": {
                "c_attn": {"w": stack("attn/c_attn/w"), "b": stack("attn/c_attn/b")},
                "c_proj": {"w": stack("attn/c_proj/w"), "b": stack("attn/c_proj/b")},
            },
            "ln_2": {"g": stack("ln_2/g"), "b": stack("ln_2/b")},
            "mlp": {
                "c_fc": {"w": stack("mlp/c_fc/w"), "b": stack("mlp/c_fc/b")},
                "c_proj": {"w": stack("mlp/c_proj/w"), "b": stack("mlp/c_proj/b")},
            },
        },
        "ln_f": {"g": openai_arrays["model/ln_f/g"], "b": openai_arrays["model/ln_f/b"]},
    }


@pytest.fixture
def cached_checkpoint(openai_checkpoint_dir, models_dir):
    """A copy of the tiny OpenAI checkpoint placed in the cache as size 124M (safe to damage)."""
    folder = models_dir / "124M"
    shutil.copytree(openai_checkpoint_dir, folder)
    return folder


# --- OpenAI TF checkpoint -> canonical ---


def test_tf_checkpoint_converts_to_exactly_the_written_arrays(
    openai_checkpoint_dir, openai_arrays, tiny_config
):
    tree, config = load_tf_checkpoint(openai_checkpoint_dir)

    assert config == tiny_config
    assert_trees_equal(tree, expected_canonical(openai_arrays, tiny_config.n_layer))


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_corrupt_tf_data_file_raises_and_deletes_the_checkpoint(
    cached_checkpoint, models_dir, damage
):
    data = cached_checkpoint / DATA
    raw = bytearray(data.read_bytes())
    if damage == "flip":
        raw[len(raw) // 2] ^= 0xFF
    else:
        raw = raw[: len(raw) // 2]
    data.write_bytes(bytes(raw))
    offline = f"http://127.0.0.1:{unused_port()}/gpt-2"

    with pytest.raises(GPT2Error, match=r"corrupt.*deleted"):
        load_pretrained("124M", models_dir, offline, progress=False)

    assert not any((cached_checkpoint / name).exists() for name in CHECKPOINT_FILES)
    assert not (cached_checkpoint / CANONICAL_NAME).exists()
    assert (cached_checkpoint / "encoder.json").is_file()


def test_corrupt_tf_index_file_is_reported_with_its_folder(cached_checkpoint):
    (cached_checkpoint / "model.ckpt.index").write_bytes(b"not an sstable")

    with pytest.raises(GPT2Error, match=f"{cached_checkpoint}.*corrupt"):
        load_tf_checkpoint(cached_checkpoint)


def test_tf_checkpoint_wider_than_hparams_names_variable_and_shapes(cached_checkpoint, tiny_config):
    hparams = {**tiny_config.to_hparams(), "n_ctx": 64}
    (cached_checkpoint / "hparams.json").write_text(json.dumps(hparams))

    with pytest.raises(GPT2Error, match=r"'model/wpe' has shape \(128, 32\).*\(64, 32\)"):
        load_tf_checkpoint(cached_checkpoint)


def test_tf_checkpoint_missing_layer_names_variable(cached_checkpoint, tiny_config):
    hparams = {**tiny_config.to_hparams(), "n_layer": 3}
    (cached_checkpoint / "hparams.json").write_text(json.dumps(hparams))

    with pytest.raises(GPT2Error, match="model/h2/ln_1/g"):
        load_tf_checkpoint(cached_checkpoint)


# --- canonical file ---


def test_canonical_round_trip_is_bitwise(tiny_config, tmp_path):
    tree = random_tree(tiny_config)

    path = save_canonical(tree, tiny_config, tmp_path / "w.safetensors")
    loaded, config = load_canonical(path)

    assert config == tiny_config
    assert_trees_equal(loaded, tree)
    assert [p.name for p in tmp_path.iterdir()] == ["w.safetensors"]


def test_canonical_keeps_non_default_layer_norm_epsilon(tmp_path):
    config = GPT2Config(n_embd=8, n_head=2, n_layer=1, n_vocab=16, n_ctx=4, ln_eps=1e-6)

    save_canonical(random_tree(config), config, tmp_path / "w.safetensors")

    assert load_canonical(tmp_path / "w.safetensors")[1] == config


def test_truncated_canonical_file_is_named_in_error(tiny_config, tmp_path):
    path = save_canonical(random_tree(tiny_config), tiny_config, tmp_path / "w.safetensors")
    path.write_bytes(path.read_bytes()[:-1000])

    with pytest.raises(GPT2Error, match=str(path)):
        load_canonical(path)


def test_foreign_safetensors_is_not_mistaken_for_canonical(tmp_path):
    path = tmp_path / "other.safetensors"
    safetensors.numpy.save_file({"x": np.zeros(3, np.float32)}, str(path))

    with pytest.raises(GPT2Error, match="not a gpt2-jax canonical"):
        load_canonical(path)


def test_damaged_canonical_cache_is_rebuilt(cached_checkpoint, models_dir, tiny_config, caplog):
    (cached_checkpoint / CANONICAL_NAME).write_bytes(b"garbage")
    offline = f"http://127.0.0.1:{unused_port()}/gpt-2"

    _, config, _ = load_pretrained("124M", models_dir, offline, progress=False)

    assert "Rebuilding it from OpenAI's checkpoint." in caplog.text

    assert config == tiny_config
    assert load_canonical(cached_checkpoint / CANONICAL_NAME)[1] == tiny_config


def test_written_weights_get_the_umasks_mode_not_private_0600(tiny_config, tmp_path):
    old = os.umask(0o027)
    try:
        save_canonical(random_tree(tiny_config), tiny_config, tmp_path / "w.safetensors")
        save_hf(random_tree(tiny_config), tiny_config, tmp_path / "hf")
    finally:
        os.umask(old)

    for path in (tmp_path / "w.safetensors", *(tmp_path / "hf").iterdir()):
        assert stat.S_IMODE(path.stat().st_mode) == 0o640, path


def test_tensor_of_an_unsupported_dtype_is_named_with_the_supported_ones(tmp_path):
    path = tmp_path / "t.safetensors"
    safetensors.numpy.save_file({"wte.weight": np.zeros((4, 2), np.uint16)}, str(path))

    with pytest.raises(GPT2Error, match=r"'wte\.weight' .* dtype U16.* supported dtypes are F64"):
        read_safetensors(path)


# --- Hugging Face safetensors ---


def test_hf_round_trip_is_bitwise(tiny_config, tmp_path):
    tree = random_tree(tiny_config)

    save_hf(tree, tiny_config, tmp_path / "hf")
    loaded, config = load_hf(tmp_path / "hf")

    assert config == tiny_config
    assert_trees_equal(loaded, tree)


def test_hf_files_have_hf_names_and_a_transformers_config(tiny_config, tmp_path):
    save_hf(random_tree(tiny_config), tiny_config, tmp_path / "hf")

    tensors = safetensors.numpy.load_file(str(tmp_path / "hf" / "model.safetensors"))
    hf_config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert tensors["h.1.attn.c_attn.weight"].shape == (32, 96)
    assert "wte.weight" in tensors and not any(k.startswith("transformer.") for k in tensors)
    assert hf_config["model_type"] == "gpt2"
    assert hf_config["architectures"] == ["GPT2LMHeadModel"]
    assert (hf_config["n_embd"], hf_config["n_head"], hf_config["n_layer"]) == (32, 4, 2)
    assert (hf_config["vocab_size"], hf_config["n_positions"]) == (50257, 128)
    assert hf_config["tie_word_embeddings"] is True


def test_hf_file_written_by_hand_gives_openai_layout_untransposed(
    openai_arrays, tiny_config, tmp_path
):
    path = tmp_path / "model.safetensors"
    tensors = hf_tensors_by_hand(openai_arrays, tiny_config.n_layer)
    safetensors.numpy.save_file(tensors, str(path), {"format": "pt"})
    write_hf_config_by_hand(tmp_path, tiny_config)

    tree, config = load_hf(path)

    assert config == tiny_config
    assert_trees_equal(tree, expected_canonical(openai_arrays, tiny_config.n_layer))
    c_attn = tree["blocks"]["attn"]["c_attn"]["w"]
    assert c_attn.shape == (2, 32, 96)
    np.testing.assert_array_equal(c_attn[1], tensors["h.1.attn.c_attn.weight"])


def test_hf_without_config_json_infers_shapes_and_openai_head_count(tmp_path):
    config = GPT2Config(n_embd=768, n_head=12, n_layer=1, n_vocab=16, n_ctx=8)
    save_hf(random_tree(config), config, tmp_path)
    (tmp_path / "config.json").unlink()

    assert load_hf(tmp_path / "model.safetensors")[1] == config


def test_hf_prefixed_names_and_mask_buffers_load(openai_arrays, tiny_config, tmp_path):
    tensors = hf_tensors_by_hand(openai_arrays, tiny_config.n_layer, prefix="transformer.")
    for i in range(tiny_config.n_layer):
        tensors[f"transformer.h.{i}.attn.bias"] = np.tril(np.ones((1, 1, 128, 128), np.float32))
        tensors[f"transformer.h.{i}.attn.masked_bias"] = np.array(-1e4, np.float32)
    tensors["lm_head.weight"] = openai_arrays["model/wte"]
    write_hf_config_by_hand(tmp_path, tiny_config)
    safetensors.numpy.save_file(tensors, str(tmp_path / "model.safetensors"), {"format": "pt"})

    tree, _ = load_hf(tmp_path)

    assert_trees_equal(tree, expected_canonical(openai_arrays, tiny_config.n_layer))


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"scale_attn_weights": False}, "sets scale_attn_weights to False; only GPT-2's attention"),
        ({"scale_attn_by_inverse_layer_idx": True}, "sets scale_attn_by_inverse_layer_idx to True;"),
        ({"n_inner": 100}, "sets n_inner to 100; only GPT-2's MLP width of 4 * n_embd"),
    ],
)  # fmt: skip
def test_hf_configs_that_change_the_arithmetic_are_refused(setting, message):
    config = GPT2Config(n_embd=32, n_head=2, n_layer=1, n_vocab=16, n_ctx=8)
    assert config_from_hf({**hf_config(config), "n_inner": 128}) == config
    with pytest.raises(GPT2Error, match=re.escape(message)):
        config_from_hf({**hf_config(config), **setting})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t, a: {**t, "lm_head.weight": a["model/wte"] + 1}, "untied"),
        (
            lambda t, a: {**t, "h.1.mlp.c_fc.weight": t["h.1.mlp.c_fc.weight"].T.copy()},
            r"'h\.1\.mlp\.c_fc\.weight' .* shape \(128, 32\)",
        ),
        (
            lambda t, a: {**t, "h.0.attn.q_proj.weight": np.zeros((32, 32), np.float32)},
            r"unknown tensor 'h\.0\.attn\.q_proj\.weight'",
        ),
        (
            lambda t, a: {k: v for k, v in t.items() if k != "h.1.ln_2.bias"},
            r"'h\.1\.ln_2\.bias'",
        ),
    ],
    ids=["untied-lm-head", "shape-mismatch", "unknown-tensor", "missing-tensor"],
)
def test_hf_tensors_that_are_not_gpt2s_are_refused_by_name(
    change, message, openai_arrays, tiny_config, tmp_path
):
    """An untied `lm_head` is refused, and so is a mis-shaped, unknown or missing tensor, by name."""
    tensors = change(hf_tensors_by_hand(openai_arrays, tiny_config.n_layer), openai_arrays)
    write_hf_config_by_hand(tmp_path, tiny_config)
    safetensors.numpy.save_file(tensors, str(tmp_path / "model.safetensors"))

    with pytest.raises(GPT2Error, match=message):
        load_hf(tmp_path)


def test_hf_without_config_and_unknown_width_asks_for_config_json(tmp_path):
    config = GPT2Config(n_embd=24, n_head=4, n_layer=1, n_vocab=16, n_ctx=8)
    save_hf(random_tree(config), config, tmp_path)
    (tmp_path / "config.json").unlink()

    with pytest.raises(GPT2Error, match=r"config\.json"):
        load_hf(tmp_path)


def test_hf_one_dimensional_wte_is_named_with_its_shape(tmp_path):
    config = GPT2Config(n_embd=768, n_head=12, n_layer=1, n_vocab=16, n_ctx=8)
    save_hf(random_tree(config), config, tmp_path)
    (tmp_path / "config.json").unlink()
    tensors = safetensors.numpy.load_file(str(tmp_path / "model.safetensors"))
    tensors["wte.weight"] = tensors["wte.weight"].ravel()
    safetensors.numpy.save_file(tensors, str(tmp_path / "model.safetensors"))

    with pytest.raises(GPT2Error, match=r"'wte\.weight' .* shape \(12288,\).* 2-D"):
        load_hf(tmp_path)


def test_hf_config_json_that_is_not_an_object_is_refused(tiny_config, tmp_path):
    save_hf(random_tree(tiny_config), tiny_config, tmp_path)
    (tmp_path / "config.json").write_text("[768, 12]")

    with pytest.raises(
        GPT2Error, match=r"config\.json must hold a JSON object .*, not \[768, 12\]\."
    ):
        load_hf(tmp_path)


# --- convert (the `gpt2 convert` command) ---


def test_detect_format_tells_the_three_formats_apart(openai_checkpoint_dir, tiny_config, tmp_path):
    save_hf(random_tree(tiny_config), tiny_config, tmp_path / "hf")
    save_canonical(random_tree(tiny_config), tiny_config, tmp_path / "c.safetensors")

    assert detect_format(openai_checkpoint_dir) == "openai"
    assert detect_format(tmp_path / "hf") == "hf"
    assert detect_format(tmp_path / "hf" / "model.safetensors") == "hf"
    assert detect_format(tmp_path / "c.safetensors") == "canonical"
    with pytest.raises(GPT2Error, match="not a GPT-2 checkpoint"):
        detect_format(tmp_path)


def test_convert_openai_to_hf_to_canonical_keeps_every_value(
    openai_checkpoint_dir, openai_arrays, tiny_config, tmp_path
):
    hf_dir = convert(openai_checkpoint_dir, tmp_path / "hf", to="hf")
    canonical = convert(hf_dir, tmp_path / "w.safetensors", to="canonical")

    tree, config = load_canonical(canonical)
    assert config == tiny_config
    assert_trees_equal(tree, expected_canonical(openai_arrays, tiny_config.n_layer))


def test_folder_with_hf_and_canonical_weights_is_ambiguous(tiny_config, tmp_path):
    save_hf(random_tree(tiny_config), tiny_config, tmp_path)
    save_canonical(random_tree(tiny_config, seed=1), tiny_config, tmp_path / CANONICAL_NAME)

    with pytest.raises(
        GPT2Error, match=r"both model\.safetensors and model\.canonical\.safetensors"
    ):
        load_weights(tmp_path)

    assert detect_format(tmp_path / "model.safetensors") == "hf"
    assert detect_format(tmp_path / CANONICAL_NAME) == "canonical"


def test_models_cache_folder_with_openai_files_and_canonical_reads_the_canonical(
    cached_checkpoint, tiny_config
):
    save_canonical(random_tree(tiny_config), tiny_config, cached_checkpoint / CANONICAL_NAME)

    assert detect_format(cached_checkpoint) == "canonical"


def test_convert_to_canonical_into_a_new_folder_writes_the_file_inside_it(
    openai_checkpoint_dir, tiny_config, tmp_path
):
    written = convert(openai_checkpoint_dir, f"{tmp_path / 'new'}{os.sep}", to="canonical")

    assert written == tmp_path / "new" / CANONICAL_NAME
    assert detect_format(tmp_path / "new") == "canonical"
    assert load_weights(tmp_path / "new")[1] == tiny_config


def test_canonical_file_with_any_suffix_is_recognised_by_its_content(
    openai_checkpoint_dir, tiny_config, tmp_path
):
    convert(openai_checkpoint_dir, tmp_path / "tiny.st", to="canonical")

    assert detect_format(tmp_path / "tiny.st") == "canonical"
    assert load_weights(tmp_path / "tiny.st")[1] == tiny_config


@pytest.mark.parametrize(
    ("to", "dst", "reason"),
    [
        ("hf", "out", "(it is a file); give a folder where you can write."),
        ("hf", "out/hf", "({folder} is a file); give a folder where you can write."),
        ("canonical", "out/x.st", "({folder} is a file); give a file path where you can write."),
    ],
)
def test_convert_onto_a_regular_file_fails_in_one_sentence(
    tiny_config, tmp_path, capsys, to, dst, reason
):
    source = save_canonical(random_tree(tiny_config), tiny_config, tmp_path / "x.safetensors")
    not_a_folder = tmp_path / "out"
    not_a_folder.write_text("")

    code = main(["convert", str(source), str(tmp_path / dst), "--to", to])

    err = capsys.readouterr().err
    assert code == 2
    assert err == (
        f"gpt2 convert: error: Cannot write dst {tmp_path / dst} "
        f"{reason.format(folder=not_a_folder)}\n"
    )
    assert not_a_folder.read_text() == ""


def test_convert_rejects_unknown_target(openai_checkpoint_dir, tmp_path):
    with pytest.raises(GPT2Error, match=r"Cannot convert to 'onnx'; choose 'hf' or 'canonical'\."):
        convert(openai_checkpoint_dir, tmp_path / "x", to="onnx")


def test_safetensors_are_read_as_aligned_views_equal_to_the_librarys_own(tmp_path):
    """Every dtype reads back exactly, and a 64-byte-aligned tensor is adopted by JAX without a
    copy (writing the host array shows through the device array)."""
    path = tmp_path / "t.safetensors"
    tensors = {
        "f32": np.arange(48, dtype=np.float32).reshape(3, 16),
        "f16": np.arange(5, dtype=np.float16),
        "i64": np.array([-(2**40), 7], np.int64),
        "u8": np.arange(3, dtype=np.uint8),
        "bool": np.array([True, False]),
    }
    safetensors.numpy.save_file(tensors, str(path), metadata={"k": "v"})

    read, metadata = read_safetensors(path)

    assert metadata == {"k": "v"}
    assert read.keys() == tensors.keys()
    for name, array in tensors.items():
        assert read[name].dtype == array.dtype and np.array_equal(read[name], array), name
    safetensors.numpy.save_file({"w": tensors["f32"]}, str(path))
    (weight,) = read_safetensors(path)[0].values()
    assert weight.ctypes.data % ALIGNMENT == 0
    on_device = jax.device_put(weight)
    weight[0, 0] = 100.0
    assert np.asarray(on_device)[0, 0] == 100.0
