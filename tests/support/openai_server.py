"""A local stand-in for OpenAI's GPT-2 storage, with knobs to break it the ways networks break.

It serves `<root>/models/<size>/<file>` at `http://127.0.0.1:<port>/gpt-2/models/<size>/<file>`,
honours `Range: bytes=N-` with 206 + Content-Range, and can cut a file's connection after N bytes,
stall in the middle of it, send other bytes than the file's, or answer an HTTP error for it. It
listens on loopback only, on a free port, and stops on exit.
"""

from __future__ import annotations

import collections
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType

URL_PREFIX = "/gpt-2/"
_RANGE = re.compile(r"bytes=(\d+)-$")


class OpenAIServer:
    """Serve `root` (holding `models/<size>/<file>`) over HTTP on 127.0.0.1.

    Knobs (all by file name, e.g. `"model.ckpt.data-00000-of-00001"`):
      - `cut(name, after_bytes, times=1)`: the next `times` responses for `name` announce the full
        length but close the connection once byte `after_bytes` of the file has been sent.
      - `stall(name, after_bytes, seconds, times=1)`: the next `times` responses for `name` pause
        for `seconds` once byte `after_bytes` has been sent, then go on.
      - `not_found.add(name)`: answer 404.
      - `errors[name] = status`: answer that HTTP status (500, 503...).
      - `damaged.add(name)`: send the file with its middle byte changed (same length).
      - `ignore_range.add(name)`: answer 200 with the whole file even to a Range request.
    Records: `requests[name]` counts requests, `range_headers[name]` lists the Range headers seen.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()
        self.not_found: set[str] = set()
        self.errors: dict[str, int] = {}
        self.damaged: set[str] = set()
        self.ignore_range: set[str] = set()
        self.requests: collections.Counter[str] = collections.Counter()
        self.range_headers: dict[str, list[str]] = collections.defaultdict(list)
        self._cuts: dict[str, list[int]] = {}  # name -> [after_bytes, times_left]
        self._stalls: dict[str, list[float]] = {}  # name -> [after_bytes, seconds, times_left]
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)

    @property
    def base_url(self) -> str:
        """The value for `GPT2_BASE_URL`, e.g. `http://127.0.0.1:54321/gpt-2`."""
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}{URL_PREFIX.rstrip('/')}"

    def cut(self, name: str, after_bytes: int, times: int = 1) -> None:
        with self._lock:
            self._cuts[name] = [after_bytes, times]

    def stall(self, name: str, after_bytes: int, seconds: float, times: int = 1) -> None:
        with self._lock:
            self._stalls[name] = [after_bytes, seconds, times]

    def __enter__(self) -> OpenAIServer:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def _take_cut(self, name: str) -> int | None:
        with self._lock:
            cut = self._cuts.get(name)
            if not cut or cut[1] <= 0:
                return None
            cut[1] -= 1
            return cut[0]

    def _take_stall(self, name: str) -> tuple[int, float] | None:
        with self._lock:
            stall = self._stalls.get(name)
            if not stall or stall[2] <= 0:
                return None
            stall[2] -= 1
            return int(stall[0]), stall[1]

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if not self.path.startswith(URL_PREFIX):
                    self.send_error(404)
                    return
                path = (server.root / self.path[len(URL_PREFIX) :]).resolve()
                name = path.name
                range_header = self.headers.get("Range")
                with server._lock:
                    server.requests[name] += 1
                    if range_header:
                        server.range_headers[name].append(range_header)
                if name in server.not_found or not path.is_relative_to(server.root):
                    self.send_error(404)
                    return
                if name in server.errors:
                    self.send_error(server.errors[name])
                    return
                if not path.is_file():
                    self.send_error(404)
                    return
                data = path.read_bytes()
                if name in server.damaged:
                    middle = len(data) // 2
                    data = data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :]
                start = 0
                match = _RANGE.match(range_header or "")
                if match and name not in server.ignore_range:
                    start = int(match.group(1))
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                cut = server._take_cut(name)
                end = len(data) if cut is None else max(start, min(cut, len(data)))
                stall = server._take_stall(name)
                if stall is not None and start < stall[0] < end:
                    self.wfile.write(data[start : stall[0]])
                    self.wfile.flush()
                    time.sleep(stall[1])
                    start = stall[0]
                try:
                    self.wfile.write(data[start:end])
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):  # the client gave up during a stall
                    return
                if cut is not None:
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)

            def log_message(self, format: str, *args: object) -> None:
                pass

        return Handler


def unused_port() -> int:
    """A loopback port nobody listens on (so connecting to it is refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
