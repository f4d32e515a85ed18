"""A misbehaving server and a damaged cache, met by the command line: each gives one sentence and
status 2, or a download that recovers, and never a damaged file kept under its final name."""

from __future__ import annotations

import hashlib
import shutil

import pytest

from shared.tokenizer import RANKS_NAME
from shared.weights import CANONICAL_NAME
from shared.weights.openai import FILES
from tests.faults.conftest import refused, run_gpt2
from tests.support.openai_server import OpenAIServer, unused_port

DATA = "model.ckpt.data-00000-of-00001"
NOISE = ("oneDNN", "absl", "tensorflow", "TF_ENABLE", "cuda", "Traceback", "WARNING", "E0000")
"""What TensorFlow, absl and XLA print on their own; none of it belongs on a user's terminal."""
GREEDY = ("generate", "--prompt=Hello", "--max-new-tokens=2", "--temperature=0")


@pytest.fixture(scope="module")
def sums(openai_checkpoint_dir, tmp_path_factory):
    """A `sha256sum` file of the served checkpoint, as a mirror would publish."""
    path = tmp_path_factory.mktemp("sums") / "SHA256SUMS"
    lines = [
        f"{hashlib.sha256((openai_checkpoint_dir / name).read_bytes()).hexdigest()}  124M/{name}"
        for name in FILES
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def env_for(base_env, server, cache, sums=None):
    env = {**base_env, "GPT2_BASE_URL": server.base_url, "GPT2_MODELS_DIR": str(cache),
           "GPT2_DOWNLOAD_TIMEOUT": "1"}  # fmt: skip
    return env | ({"GPT2_SHA256SUMS": str(sums)} if sums else {})


@pytest.fixture(scope="module")
def first_download(base_env, openai_checkpoint_dir, sums, tmp_path_factory):
    """`gpt2 download 124M` into an empty cache from a server that cuts the data file once and
    stalls on the index once: (its result, the cache)."""
    cache = tmp_path_factory.mktemp("first") / "models"
    with OpenAIServer(openai_checkpoint_dir.parents[1]) as server:
        server.cut(DATA, after_bytes=100_000)
        server.stall("model.ckpt.index", after_bytes=100, seconds=3)
        result = run_gpt2(env_for(base_env, server, cache, sums), "download", "124M")
    return result, cache


@pytest.mark.slow
def test_a_first_download_recovers_from_a_cut_and_a_stall_and_converts_quietly(
    first_download, openai_checkpoint_dir
):
    result, cache = first_download
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("124M: ") and "parameters ready in" in result.stdout
    for name in FILES:
        assert (cache / "124M" / name).read_bytes() == (openai_checkpoint_dir / name).read_bytes()
    assert not [word for word in NOISE if word in result.stderr], result.stderr


@pytest.mark.parametrize(
    "name", [DATA, "encoder.json"], ids=["pinned-by-the-mirrors-sums", "pinned-here"]
)
def test_a_file_with_wrong_bytes_is_deleted_and_the_others_kept(
    base_env, openai_server, openai_checkpoint_dir, sums, tmp_path, name
):
    openai_server.damaged.add(name)
    env = env_for(base_env, openai_server, tmp_path, sums if name == DATA else None)
    line = refused(run_gpt2(env, "download", "124M"), "sent a file whose sha256 is")
    assert f"/models/124M/{name} sent" in line and "it was deleted, so try again" in line
    kept = sorted(path.name for path in (tmp_path / "124M").iterdir())
    assert kept == list(FILES[: FILES.index(name)])  # fetched in order, stopped at the bad one
    for name in kept:
        assert (tmp_path / "124M" / name).read_bytes() == (
            openai_checkpoint_dir / name
        ).read_bytes()


@pytest.mark.parametrize(
    ("status", "message"),
    [(404, "does not exist (HTTP 404): the server at"), (500, "answered HTTP 500")],
)
def test_an_http_error_is_one_sentence_naming_the_url(
    base_env, openai_server, tmp_path, status, message
):
    openai_server.errors["model.ckpt.meta"] = status
    line = refused(
        run_gpt2(env_for(base_env, openai_server, tmp_path), "download", "124M"), message
    )
    assert f"{openai_server.base_url}/models/124M/model.ckpt.meta" in line
    assert not list((tmp_path / "124M").glob("model.ckpt.meta*"))


def test_plain_http_to_another_machine_is_warned_about_once(base_env, tmp_path):
    env = {**base_env, "GPT2_BASE_URL": "http://192.0.2.1:9/gpt-2", "GPT2_MODELS_DIR": str(tmp_path),
           "GPT2_DOWNLOAD_TIMEOUT": "1"}  # fmt: skip
    result = run_gpt2(env, "download", "124M")
    warning, error = result.stderr.splitlines()
    assert warning.startswith("http://192.0.2.1:9/gpt-2 is plain http://, so the files could be")
    assert result.returncode == 2 and error.startswith("gpt2 download: error: Could not reach")


@pytest.mark.slow
def test_a_damaged_cached_tokenizer_file_is_deleted_and_fetched_again(
    base_env, first_download, openai_server, tmp_path
):
    cache = shutil.copytree(first_download[1], tmp_path / "models")
    good = (cache / "124M" / "encoder.json").read_bytes()
    (cache / "124M" / "encoder.json").write_bytes(good.replace(b'"!"', b'"?"', 1))
    env = env_for(base_env, openai_server, cache)
    line = refused(run_gpt2(env, *GREEDY), "encoder.json has sha256 ")
    assert line.endswith("it was deleted, so run again to download it afresh.")
    assert not (cache / "124M" / "encoder.json").exists()
    result = run_gpt2(env, "download", "124M")  # the next run fetches it again
    assert result.returncode == 0, result.stderr
    assert (cache / "124M" / "encoder.json").read_bytes() == good


def read_only(folder):
    """Make `folder` refuse new files as a read-only cache does: its mode stops everyone but
    root, and for root folders stand where the files derived from OpenAI's would be written."""
    for name in (CANONICAL_NAME, RANKS_NAME):
        (folder / name).mkdir()
    folder.chmod(0o555)


@pytest.mark.slow
def test_a_read_only_cache_of_openais_files_generates_from_memory(
    base_env, first_download, tmp_path
):
    folder = tmp_path / "models" / "124M"
    folder.mkdir(parents=True)
    for name in FILES:
        shutil.copy(first_download[1] / "124M" / name, folder / name)
    read_only(folder)
    held = sorted(path.name for path in folder.iterdir())
    offline = f"http://127.0.0.1:{unused_port()}/gpt-2"  # nothing is missing, so nothing is fetched
    env = {**base_env, "GPT2_MODELS_DIR": str(tmp_path / "models"), "GPT2_BASE_URL": offline}
    result = run_gpt2(env, *GREEDY)
    assert result.returncode == 0 and result.stdout.startswith("Hello"), result.stderr
    (line,) = result.stderr.splitlines()  # said once, and nothing else
    assert line.startswith(f"Cannot write {folder / CANONICAL_NAME} (")
    assert line.endswith(
        "); the weights converted in memory are used, and each run converts 124M again."
    )
    assert sorted(path.name for path in folder.iterdir()) == held
