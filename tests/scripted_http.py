"""An HTTP server on 127.0.0.1 for tests: it answers from a script, in order, and keeps every
request it was sent. Each server gets its own handler class, so its lists are its own."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from types import MappingProxyType
from typing import NamedTuple


class Answer(NamedTuple):
    status: int
    body: bytes = b""
    headers: Mapping[str, str] = MappingProxyType({})  # one default, shared: read-only
    delay: float = 0.0  # seconds before answering


class Request(NamedTuple):
    method: str
    path: str
    headers: dict
    body: bytes


class Scripted(http.server.BaseHTTPRequestHandler):
    script: list[Answer]  # answers in order; once it runs out, 200 with no body
    seen: list[Request]

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def _serve(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.seen.append(Request(self.command, self.path, dict(self.headers), body))
        answer = self.script.pop(0) if self.script else Answer(200)
        time.sleep(answer.delay)
        self.send_response(answer.status)
        for k, v in answer.headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(answer.body)))
        self.end_headers()
        self.wfile.write(answer.body)

    def log_message(self, *args) -> None:
        pass


@contextmanager
def scripted_server() -> Iterator[tuple[str, type[Scripted]]]:
    """("127.0.0.1:PORT", the handler class whose script and seen lists the test uses)."""
    handler = type("Handler", (Scripted,), {"script": [], "seen": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"127.0.0.1:{server.server_port}", handler
    finally:
        server.shutdown()
        server.server_close()
