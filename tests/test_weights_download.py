"""Downloading OpenAI's files: complete, resumable, clear when it fails, and done only once."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from shared import digests
from shared.cli import main
from shared.errors import GPT2Error
from shared.weights import CANONICAL_NAME, download, downloaded_sizes, load_pretrained, openai
from shared.weights.openai import FILES, TIMEOUT_ENV, models_dir, resolve_timeout
from tests.support.openai_server import unused_port

DATA = "model.ckpt.data-00000-of-00001"


def assert_no_incomplete_final_files(cache: Path, source: Path) -> None:
    """Every file under a final (non-.part) name in the cache equals the served original."""
    for path in cache.rglob("*"):
        if path.is_file() and not path.name.endswith(".part") and path.name in FILES:
            assert path.read_bytes() == (source / path.name).read_bytes(), path


def test_download_fetches_all_seven_files_byte_identical(
    openai_server, openai_checkpoint_dir, models_dir
):
    folder = download("124M", models_dir, openai_server.base_url, progress=True)

    assert folder == models_dir / "124M"
    assert sorted(p.name for p in folder.iterdir()) == sorted(FILES)
    for name in FILES:
        assert (folder / name).read_bytes() == (openai_checkpoint_dir / name).read_bytes()
    assert downloaded_sizes(models_dir) == ["124M"]


def test_download_accepts_size_aliases(openai_server, models_dir):
    assert download("gpt2", models_dir, openai_server.base_url, progress=False).name == "124M"


def test_cut_connection_resumes_with_range_request(
    openai_server, openai_checkpoint_dir, models_dir
):
    openai_server.cut(DATA, after_bytes=100_000)

    download("124M", models_dir, openai_server.base_url, progress=False, retry_delay=0)

    assert openai_server.requests[DATA] == 2
    assert openai_server.range_headers[DATA] == ["bytes=100000-"]
    served = (openai_checkpoint_dir / DATA).read_bytes()
    assert (models_dir / "124M" / DATA).read_bytes() == served
    assert not (models_dir / "124M" / f"{DATA}.part").exists()


def test_leftover_part_file_is_resumed_not_restarted(
    openai_server, openai_checkpoint_dir, models_dir
):
    served = (openai_checkpoint_dir / DATA).read_bytes()
    (models_dir / "124M").mkdir()
    (models_dir / "124M" / f"{DATA}.part").write_bytes(served[:12345])

    download("124M", models_dir, openai_server.base_url, files=[DATA], progress=False)

    assert openai_server.range_headers[DATA] == ["bytes=12345-"]
    assert (models_dir / "124M" / DATA).read_bytes() == served


def test_server_ignoring_range_restarts_the_file_from_zero(
    openai_server, openai_checkpoint_dir, models_dir
):
    served = (openai_checkpoint_dir / DATA).read_bytes()
    (models_dir / "124M").mkdir()
    (models_dir / "124M" / f"{DATA}.part").write_bytes(served[:12345])
    openai_server.ignore_range.add(DATA)

    download("124M", models_dir, openai_server.base_url, files=[DATA], progress=False)

    assert openai_server.range_headers[DATA] == ["bytes=12345-"]
    assert (models_dir / "124M" / DATA).read_bytes() == served


def test_part_file_longer_than_the_file_is_discarded(
    openai_server, openai_checkpoint_dir, models_dir
):
    served = (openai_checkpoint_dir / "hparams.json").read_bytes()
    (models_dir / "124M").mkdir()
    (models_dir / "124M" / "hparams.json.part").write_bytes(served + b"junk")

    download(
        "124M",
        models_dir,
        openai_server.base_url,
        files=["hparams.json"],
        progress=False,
        retry_delay=0,
    )

    assert (models_dir / "124M" / "hparams.json").read_bytes() == served


def test_connection_cut_every_time_fails_naming_file_and_byte_counts(
    openai_server, openai_checkpoint_dir, models_dir
):
    openai_server.cut(DATA, after_bytes=100_000, times=100)
    total = (openai_checkpoint_dir / DATA).stat().st_size

    with pytest.raises(GPT2Error) as error:
        download(
            "124M", models_dir, openai_server.base_url, progress=False, retries=2, retry_delay=0
        )

    message = str(error.value)
    assert DATA in message and f"{100_000:,} of {total:,} bytes" in message
    assert not (models_dir / "124M" / DATA).exists()
    assert (models_dir / "124M" / f"{DATA}.part").stat().st_size == 100_000
    assert_no_incomplete_final_files(models_dir, openai_checkpoint_dir)


def test_unreachable_server_names_url_folder_and_files(models_dir, openai_checkpoint_dir):
    base = f"http://127.0.0.1:{unused_port()}/gpt-2"

    with pytest.raises(GPT2Error) as error:
        download("124M", models_dir, base, progress=False)

    message = str(error.value)
    assert f"{base}/models/124M/checkpoint" in message
    assert str(models_dir / "124M") in message
    assert all(name in message for name in FILES)
    assert "GPT2_BASE_URL" in message
    assert_no_incomplete_final_files(models_dir, openai_checkpoint_dir)


def test_a_file_whose_digest_differs_from_the_tables_is_never_renamed(
    openai_server, openai_checkpoint_dir, models_dir
):
    wrong = {f"124M/{DATA}": "0" * 64}

    with pytest.raises(GPT2Error, match=r"sha256 is [0-9a-f]{64}, not the expected 0{64}"):
        download("124M", models_dir, openai_server.base_url, digests=wrong, progress=False)

    assert not (models_dir / "124M" / DATA).exists()
    assert not (models_dir / "124M" / f"{DATA}.part").exists()
    assert_no_incomplete_final_files(models_dir, openai_checkpoint_dir)


def test_a_sums_file_pins_digests_and_a_bad_one_is_named(monkeypatch, tmp_path):
    sums = tmp_path / "SHA256SUMS"
    sums.write_text(f"{'a' * 64}  124M/{DATA}\n{'B' * 64} *355M/vocab.bpe\n\n")
    monkeypatch.setenv(digests.SUMS_ENV, str(sums))
    assert digests.expected_sha256("124M", DATA) == "a" * 64
    assert digests.expected_sha256("355M", "vocab.bpe") == "b" * 64  # a mirror's own wins
    assert digests.expected_sha256("124M", "vocab.bpe") == digests.VOCAB_BPE_SHA256  # pinned
    assert digests.expected_sha256("124M", "hparams.json") is None  # OpenAI publishes none
    sums.write_text("not a digest  124M/vocab.bpe\n")
    with pytest.raises(GPT2Error, match=r"^Line 1 of GPT2_SHA256SUMS .* is 'not a digest"):
        digests.sums_from_environment()


@pytest.mark.parametrize("value", ["0", "-1", "soon", "inf"])
def test_a_timeout_that_is_not_a_positive_number_is_named(monkeypatch, value):
    monkeypatch.setenv(TIMEOUT_ENV, value)
    with pytest.raises(GPT2Error, match=rf"^GPT2_DOWNLOAD_TIMEOUT must be .*, got '{value}'\.$"):
        resolve_timeout()


def test_plain_http_is_warned_about_only_for_another_machine(caplog):
    for root in ("http://127.0.0.1:8000/gpt-2", "http://localhost/gpt-2", "https://mirror/gpt-2"):
        openai._warn_if_plain_http(root)
    assert not caplog.records
    openai._warn_if_plain_http("http://mirror.example/gpt-2")
    openai._warn_if_plain_http("http://mirror.example/gpt-2")
    assert [r.getMessage()[:50] for r in caplog.records] == [
        "http://mirror.example/gpt-2 is plain http://, so t"
    ]


def test_complete_files_are_not_downloaded_again(openai_server, models_dir):
    download("124M", models_dir, openai_server.base_url, progress=False)
    download("124M", models_dir, openai_server.base_url, progress=False)

    assert all(openai_server.requests[name] == 1 for name in FILES)


def test_concurrent_downloads_of_one_cache_fetch_each_file_once(
    openai_server, openai_checkpoint_dir, models_dir
):
    start = threading.Barrier(2)

    def fetch(_: int) -> Path:
        start.wait()
        return download("124M", models_dir, openai_server.base_url, progress=False)

    with ThreadPoolExecutor(2) as pool:
        folders = list(pool.map(fetch, range(2)))

    assert folders == [models_dir / "124M"] * 2
    assert sorted(p.name for p in folders[0].iterdir()) == sorted(FILES)
    for name in FILES:
        assert (folders[0] / name).read_bytes() == (openai_checkpoint_dir / name).read_bytes()
        assert openai_server.requests[name] == 1, name


@pytest.fixture
def malformed_range_server(openai_checkpoint_dir) -> Iterator[tuple[str, list]]:
    """(base URL, Range headers seen) of a server that answers a Range request with a 206 whose
    Content-Range is not `bytes START-END/TOTAL`, and any other request with the whole file."""
    seen: list[str | None] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            data = (openai_checkpoint_dir / Path(self.path).name).read_bytes()
            seen.append(self.headers.get("Range"))
            if self.headers.get("Range"):
                self.send_response(206)
                self.send_header("Content-Range", "bytes twelve-thousand/many")
                data = data[12345:]
            else:
                self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/gpt-2", seen
    httpd.shutdown()
    httpd.server_close()


def test_malformed_content_range_restarts_the_file_from_zero(
    malformed_range_server, openai_checkpoint_dir, models_dir
):
    base_url, seen = malformed_range_server
    served = (openai_checkpoint_dir / DATA).read_bytes()
    (models_dir / "124M").mkdir()
    (models_dir / "124M" / f"{DATA}.part").write_bytes(served[:12345])

    download("124M", models_dir, base_url, files=[DATA], progress=False, retry_delay=0)

    assert seen == ["bytes=12345-", None]
    assert (models_dir / "124M" / DATA).read_bytes() == served


def test_models_dir_that_is_a_file_fails_in_one_sentence(
    openai_server, tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv("GPT2_BASE_URL", openai_server.base_url)
    not_a_folder = tmp_path / "models"
    not_a_folder.write_text("")

    code = main(["download", "124M", "--models-dir", str(not_a_folder)])

    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("gpt2 download: error: Cannot create the model cache folder ")
    assert str(not_a_folder / "124M") in err and "Not a directory" in err
    assert err.count("\n") == 1 and err.endswith(".\n")
    assert sum(openai_server.requests.values()) == 0


def test_models_dir_follows_argument_then_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("GPT2_MODELS_DIR", str(tmp_path / "env"))
    assert models_dir() == tmp_path / "env"
    assert models_dir(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.delenv("GPT2_MODELS_DIR")
    assert models_dir().name == "models"


def test_base_url_comes_from_environment(openai_server, models_dir, monkeypatch):
    monkeypatch.setenv("GPT2_BASE_URL", openai_server.base_url)

    download("124M", models_dir, progress=False)

    assert openai_server.requests["hparams.json"] == 1


def test_load_pretrained_downloads_converts_and_caches(openai_server, tiny_config, models_dir):
    tree, config, folder = load_pretrained("124M", models_dir, openai_server.base_url, False)

    assert config == tiny_config
    assert folder == models_dir / "124M"
    assert (folder / CANONICAL_NAME).is_file()
    assert (folder / "encoder.json").is_file() and (folder / "vocab.bpe").is_file()
    assert tree["blocks"]["attn"]["c_attn"]["w"].shape == (2, 32, 96)


@pytest.mark.slow
def test_second_load_pretrained_uses_cache_without_network_or_tensorflow(openai_server, models_dir):
    load_pretrained("124M", models_dir, openai_server.base_url, progress=False)
    requests_after_first = sum(openai_server.requests.values())
    script = textwrap.dedent(
        f"""
        import sys
        from shared.weights import load_pretrained
        models_dir, base_url = {str(models_dir)!r}, {openai_server.base_url!r}
        tree, config, folder = load_pretrained("124M", models_dir, base_url, progress=False)
        assert config.n_embd == 32, config
        print("tensorflow" in sys.modules, any(m.startswith("tensorflow.") for m in sys.modules))
        """
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "False"]
    assert sum(openai_server.requests.values()) == requests_after_first
