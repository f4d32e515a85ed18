"""A local stand-in for OpenAI's GPT-2 storage, with knobs to break it the ways networks break.

It serves `<root>/models/<size>/<file>` at `http://127.0.0.1:<port>/gpt-2/models/<size>/<file>`,
honours `Range: bytes=N-` with 206 + Content-Range, and can cut a file's connection after N bytes
or answer 404 for a file. It listens on loopback only, on a free port, and stops on exit.
"""

from __future__ import annotations

import collections
import re
import socket
import threading
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
      - `not_found.add(name)`: answer 404.
      - `ignore_range.add(name)`: answer 200 with the whole file even to a Range request.
    Records: `requests[name]` counts requests, `range_headers[name]` lists the Range headers seen.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()
        self.not_found: set[str] = set()
        self.ignore_range: set[str] = set()
        self.requests: collections.Counter[str] = collections.Counter()
        self.range_headers: dict[str, list[str]] = collections.defaultdict(list)
        self._cuts: dict[str, list[int]] = {}  # name -> [after_bytes, times_left]
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
                if not path.is_file():
                    self.send_error(404)
                    return
                data = path.read_bytes()
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
                self.wfile.write(data[start:end])
                self.wfile.flush()
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
