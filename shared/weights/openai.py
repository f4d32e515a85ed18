"""Download OpenAI's GPT-2 files into a local cache, resumably and never leaving a half file behind.

A file is written as `<name>.part` and renamed only once its size matches what the server announced
and its sha256 the one expected where one is known (`shared.digests`), so a name without `.part` in
the cache always means a complete file. A `.part` left by a cut connection or an interrupted run is
resumed with an HTTP `Range` request. Each file is fetched under an exclusive lock on
`<name>.lock`, so processes sharing a cache (the hosts of a multi-host run on one filesystem)
download it once instead of writing the same `.part` together.
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import ipaddress
import logging
import math
import os
import re
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import platformdirs
from tqdm.auto import tqdm

from shared.config import MODEL_SIZES, resolve_model_size
from shared.digests import expected_sha256, file_sha256, sums_from_environment
from shared.errors import GPT2Error, writing

try:
    import fcntl
except ImportError:  # Windows: no flock, so downloads into one cache are not serialised there
    fcntl = None

logger = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://openaipublic.blob.core.windows.net/gpt-2"
BASE_URL_ENV = "GPT2_BASE_URL"
MODELS_DIR_ENV = "GPT2_MODELS_DIR"
TIMEOUT_ENV = "GPT2_DOWNLOAD_TIMEOUT"
DEFAULT_TIMEOUT = 60.0
"""Seconds a request may wait for the server's next bytes before it is tried again."""

TOKENIZER_FILES = ("encoder.json", "vocab.bpe")
CHECKPOINT_FILES = (
    "checkpoint",
    "hparams.json",
    "model.ckpt.data-00000-of-00001",
    "model.ckpt.index",
    "model.ckpt.meta",
)
FILES = tuple(sorted(CHECKPOINT_FILES + TOKENIZER_FILES))
"""The seven files OpenAI serves under `{base}/models/{size}/` for every size."""

_CHUNK = 1 << 20
_CONTENT_RANGE = re.compile(r"bytes (\d+)-\d+/(\d+|\*)", re.ASCII)
_USER_AGENT = "gpt2-jax"


def resolve_size(name: str) -> str:
    """OpenAI's size name for a size or alias (`"gpt2-medium"` -> `"355M"`), else a `GPT2Error`."""
    try:
        return resolve_model_size(name)
    except ValueError as err:
        raise GPT2Error(str(err)) from None


def resolve_base_url(url: str | None = None) -> str:
    """The download root: the argument, else `$GPT2_BASE_URL`, else OpenAI's public storage."""
    return (url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL).rstrip("/")


def resolve_timeout(timeout: float | None = None) -> float:
    """The argument, else `$GPT2_DOWNLOAD_TIMEOUT`, else `DEFAULT_TIMEOUT` seconds."""
    if timeout is not None:
        return timeout
    text = os.environ.get(TIMEOUT_ENV)
    if not text:
        return DEFAULT_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not value > 0 or math.isinf(value):
        raise GPT2Error(f"{TIMEOUT_ENV} must be a positive number of seconds, got {text!r}.")
    return value


def models_dir(path: str | os.PathLike[str] | None = None) -> Path:
    """The cache root: the argument, else `$GPT2_MODELS_DIR`, else the user cache folder."""
    if path is not None:
        return Path(path).expanduser()
    if os.environ.get(MODELS_DIR_ENV):
        return Path(os.environ[MODELS_DIR_ENV]).expanduser()
    return Path(platformdirs.user_cache_dir("gpt2-jax")) / "models"


def size_dir(size: str, root: str | os.PathLike[str] | None = None) -> Path:
    """`<models_dir>/<size>/`, the folder holding one size's files."""
    return models_dir(root) / resolve_size(size)


def is_downloaded(size: str, root: str | os.PathLike[str] | None = None) -> bool:
    """True when all seven files of `size` are in the cache under their final names."""
    folder = size_dir(size, root)
    return all((folder / name).is_file() for name in FILES)


def downloaded_sizes(models_dir: str | os.PathLike[str] | None = None) -> list[str]:
    """The sizes whose seven files are all complete in the cache, smallest first."""
    return [size for size in MODEL_SIZES if is_downloaded(size, models_dir)]


def download(
    size: str,
    models_dir: str | os.PathLike[str] | None = None,
    base_url: str | None = None,
    *,
    files: Sequence[str] = FILES,
    digests: Mapping[str, str] | None = None,
    progress: bool = True,
    retries: int = 4,
    retry_delay: float = 1.0,
    timeout: float | None = None,
) -> Path:
    """Fetch the missing `files` of `size` into `<models_dir>/<size>/` and return that folder.

    Files already present under their final names are complete by construction and are not
    fetched again. A cut connection is resumed; `retries` bounds the consecutive attempts that
    bring no new bytes, so a slow but moving download is never abandoned; `timeout` (default
    `$GPT2_DOWNLOAD_TIMEOUT`, else 60) is how many seconds a silent server is waited for before a
    request is tried again. `digests` maps `<size>/<file>` to the sha256 a file must have
    (default: `$GPT2_SHA256SUMS`'s table), on top of the pinned digests of OpenAI's tokenizer
    files; a file with another is deleted, not kept.
    """
    size = resolve_size(size)
    folder = size_dir(size, models_dir)
    root = resolve_base_url(base_url)
    timeout = resolve_timeout(timeout)
    table = sums_from_environment() if digests is None else digests
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise GPT2Error(
            f"Cannot create the model cache folder {folder} ({err}); pass --models-dir or set "
            f"{MODELS_DIR_ENV} to a folder you can write to."
        ) from None
    for name in files:
        dest = folder / name
        if dest.is_file():
            continue
        url = f"{root}/models/{size}/{name}"
        try:
            with _locked(dest):
                if dest.is_file():  # another process fetched it while this one waited
                    continue
                _warn_if_plain_http(root)
                _fetch(
                    url,
                    dest,
                    expected_sha256(size, name, table),
                    label=f"{size}/{name}",
                    progress=progress,
                    retries=retries,
                    retry_delay=retry_delay,
                    timeout=timeout,
                )
        except urllib.error.HTTPError as err:
            err.close()
            if err.code == 404:
                raise GPT2Error(
                    f"{url} does not exist (HTTP 404): the server at {root} has no {name} for "
                    f"GPT-2 {size}; check the size, or point {BASE_URL_ENV} at a full mirror."
                ) from None
            raise GPT2Error(
                f"{url} answered HTTP {err.code} {err.reason}; try again later, or set "
                f"{BASE_URL_ENV} to a mirror."
            ) from None
        except urllib.error.URLError as err:
            missing = ", ".join(n for n in files if not (folder / n).is_file())
            raise GPT2Error(
                f"Could not reach {url} ({err.reason}); to work offline, download {missing} "
                f"from {root}/models/{size}/ into {folder}, or set {BASE_URL_ENV} to a mirror."
            ) from None
        except _Cut as err:
            raise GPT2Error(
                f"Downloading {name} of GPT-2 {size} from {url} stopped at {err}, and "
                f"{retries + 1} tries in a row got no further; run again to resume from "
                f"{dest}.part."
            ) from None
        except OSError as err:
            raise GPT2Error(
                f"Downloading {name} of GPT-2 {size} from {url} failed ({err}); run again to "
                f"resume from {dest}.part."
            ) from None
    return folder


@functools.cache
def _warn_if_plain_http(root: str) -> None:
    """Say once that files from `root` could be altered on the way, unless it is this machine."""
    url = urllib.parse.urlsplit(root)
    if url.scheme != "http" or _is_loopback(url.hostname or ""):
        return
    logger.warning(
        "%s is plain http://, so the files could be altered on the way and only the digests "
        "known for them are checked; use https:// for %s unless this network is trusted.",
        root,
        BASE_URL_ENV,
    )


def _is_loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@contextlib.contextmanager
def _locked(dest: Path) -> Iterator[None]:
    """Hold an exclusive `flock` on `<dest>.lock`, removed again on release.

    The holder unlinks the lock file before releasing it, so a waiter that then gets the lock
    of the unlinked file sees that the path no longer names it and locks the new one instead.
    """
    if fcntl is None:
        yield
        return
    lock = dest.with_name(dest.name + ".lock")
    with writing(lock):
        while True:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
            fcntl.flock(fd, fcntl.LOCK_EX)
            if _same_file(fd, lock):
                break
            os.close(fd)
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock)
        os.close(fd)


def _same_file(fd: int, path: Path) -> bool:
    """True when `path` still names the open file `fd`."""
    try:
        here = os.stat(path)
    except FileNotFoundError:
        return False
    there = os.fstat(fd)
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


class _Cut(Exception):
    """The body ended before the announced size; `received` and `total` say where."""

    def __init__(self, received: int, total: int | None) -> None:
        super().__init__(f"{received:,} of {total:,} bytes" if total else f"{received:,} bytes")
        self.received, self.total = received, total


_RETRYABLE = (ConnectionError, TimeoutError, ssl.SSLError, http.client.HTTPException, _Cut)
"""Network failures worth another request; a failure of the local file is never retried."""


def _fetch(
    url: str,
    dest: Path,
    sha256: str | None,
    *,
    label: str,
    progress: bool,
    retries: int,
    retry_delay: float,
    timeout: float,
) -> None:
    """Download `url` to `dest` through `dest.part`, resuming a cut connection with `Range`,
    and keep it only if its digest is `sha256` (when not None).

    The caller holds `dest`'s lock. Local file failures raise `GPT2Error` naming the file.
    """
    part = dest.with_name(dest.name + ".part")
    bar = _Progress(label, progress)
    try:
        failures = 0
        while True:
            offset = _size(part)
            try:
                _fetch_once(url, part, offset, timeout, bar)
            except _RETRYABLE as err:
                if _size(part) > offset:
                    failures = 0
                    continue
                failures += 1
                if failures > retries:
                    raise err if isinstance(err, _Cut) else _Cut(_size(part), None) from err
                time.sleep(retry_delay * failures)
                continue
            except urllib.error.URLError as err:
                # Unreachable on the first try means offline; later, the server may be restarting.
                if isinstance(err, urllib.error.HTTPError) or (offset == 0 and failures == 0):
                    raise
                failures += 1
                if failures > retries:
                    raise
                time.sleep(retry_delay * failures)
                continue
            _check_digest(url, part, sha256)
            with writing(dest):
                os.replace(part, dest)
            return
    finally:
        bar.close()


def _check_digest(url: str, part: Path, sha256: str | None) -> None:
    """Delete `part` and say so when its digest is not `sha256`."""
    if sha256 is None:
        return
    with writing(part):
        actual = file_sha256(part)
    if actual != sha256:
        _discard(part)
        raise GPT2Error(
            f"{url} sent a file whose sha256 is {actual}, not the expected {sha256}; it was "
            f"deleted, so try again, or point {BASE_URL_ENV} at a server with OpenAI's files."
        )


class _Progress:
    """One tqdm bar per file, opened once the size is known and kept across resumed requests."""

    def __init__(self, label: str, enabled: bool) -> None:
        self.label, self.enabled = label, enabled
        self.bar: tqdm | None = None

    def start(self, total: int | None, offset: int) -> None:
        if self.bar is None:
            # Without a terminal (logs, CI) redraw rarely instead of flooding the output.
            interactive = sys.stderr is not None and sys.stderr.isatty()
            self.bar = tqdm(
                total=total,
                initial=offset,
                desc=self.label,
                disable=not self.enabled,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                dynamic_ncols=True,
                mininterval=0.1 if interactive else 10.0,
            )
        else:
            self.bar.reset(total=total)
            self.bar.update(offset)

    def update(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _size(path: Path) -> int:
    with writing(path):
        return path.stat().st_size if path.exists() else 0


def _discard(part: Path) -> None:
    with writing(part):
        part.unlink(missing_ok=True)


def _fetch_once(url: str, part: Path, offset: int, timeout: float, bar: _Progress) -> None:
    """One HTTP request that appends to `part` from byte `offset` and checks the announced size.

    Raises `_Cut` when the body ends early (the caller resumes), or when the file came out too
    large or the server's `Content-Range` is unusable (the `.part` is deleted, so the caller
    starts again from zero).
    """
    headers = {"User-Agent": _USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code != 416 or not offset:
            raise
        err.close()
        # Range not satisfiable: the .part is already whole, or longer than the file.
        if _content_range_total(err.headers.get("Content-Range")) == offset:
            return
        _discard(part)
        raise _Cut(offset, None) from None
    with response:
        if offset and response.status == 206:
            start, total = _parse_content_range(response.headers.get("Content-Range"))
            if start != offset:
                _discard(part)
                raise _Cut(0, total)
            mode = "ab"
        else:
            # 200: the server ignored the Range header, so the body starts at byte 0.
            offset, mode = 0, "wb"
            length = response.headers.get("Content-Length")
            total = int(length) if length is not None else None
        bar.start(total, offset)
        received, on_disk = _write_body(response, part, mode, offset, bar)
    if total is not None and received != total:
        if received > total:
            _discard(part)
        raise _Cut(received, total)
    if total is not None and on_disk != total:
        _discard(part)
        raise GPT2Error(
            f"{part} held {on_disk:,} bytes after a complete download of {total:,} because "
            "another program also wrote to it; it was deleted, so run again to fetch it afresh."
        )


def _write_body(
    response: http.client.HTTPResponse, part: Path, mode: str, offset: int, bar: _Progress
) -> tuple[int, int]:
    """Write the body to `part` (`mode` "wb" or "ab") and sync it.

    Returns (`offset` + bytes received, the file's real size), which differ only when something
    else wrote to `part` meanwhile.
    """
    received = offset
    with writing(part):
        f = open(part, mode)  # noqa: SIM115 - in a `with`, network errors would read as disk ones
    with f:
        while chunk := response.read(_CHUNK):
            with writing(part):
                f.write(chunk)
            received += len(chunk)
            bar.update(len(chunk))
        with writing(part):
            f.flush()
            os.fsync(f.fileno())
            return received, os.fstat(f.fileno()).st_size


def _parse_content_range(value: str | None) -> tuple[int | None, int | None]:
    """`bytes START-END/TOTAL` -> (START, TOTAL); TOTAL is None when the server sends `*`, and
    both are None when the header is missing or malformed."""
    match = _CONTENT_RANGE.fullmatch((value or "").strip())
    if match is None:
        return None, None
    start, total = match.groups()
    return int(start), None if total == "*" else int(total)


def _content_range_total(value: str | None) -> int | None:
    """The TOTAL of `bytes */TOTAL` in a 416 answer."""
    total = (value or "").rpartition("/")[2].strip()
    return int(total) if total.isdigit() else None
