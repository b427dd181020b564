"""A real HTTP file server on 127.0.0.1 for tests of downloads: ranges, failures, request log.

Use it as a context manager: `with FileServer({"/a.bin": data}) as server: server.url("/a.bin")`.
"""

from __future__ import annotations

import re
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class RecordedRequest:
    """One request as the server saw it; header names are lower-cased."""

    path: str
    headers: dict[str, str]


@dataclass
class FileServer:
    """Serves `files` (URL path -> bytes), honouring `Range: bytes=N-` unless `ignore_range`.

    Set `drop_after` to N to make the next response advertise its full length, send N body
    bytes and close the connection; put status codes in `fail_with` to answer the next
    requests with those errors, one each, in order.
    """

    files: dict[str, bytes]
    ignore_range: bool = False
    drop_after: int | None = None
    fail_with: list[int] = field(default_factory=list)
    requests: list[RecordedRequest] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def url(self, path: str) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}{path}"

    def __enter__(self) -> FileServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()


def _handler_for(server: FileServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            headers = {name.lower(): value for name, value in self.headers.items()}
            server.requests.append(RecordedRequest(self.path, headers))
            body = server.files.get(self.path)
            if server.fail_with:
                self.send_error(server.fail_with.pop(0))
            elif body is None:
                self.send_error(404)
            else:
                self._send(body, _range_start(headers.get("range")))

        def _send(self, body: bytes, start: int | None) -> None:
            if start is None or server.ignore_range:
                self.send_response(200)
                start = 0
            elif start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            else:
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            payload = body[start:]
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            drop_after, server.drop_after = server.drop_after, None
            self.wfile.write(payload if drop_after is None else payload[:drop_after])

        def log_message(self, format: str, *args: object) -> None:
            """Keep test output quiet."""

    return Handler


def _range_start(header: str | None) -> int | None:
    """N from `bytes=N-`, the only Range form downloads send; None when absent."""
    match = re.fullmatch(r"bytes=(\d+)-", header or "")
    return int(match[1]) if match else None


def unreachable_url(path: str) -> str:
    """A URL on a 127.0.0.1 port that was just closed, so connecting to it is refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}{path}"
