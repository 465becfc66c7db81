"""What the deployment server and the endpoint router share: JSON over stdlib HTTP.

Both use :class:`http.server.ThreadingHTTPServer` with non-daemon handler threads, so that
on SIGTERM the server stops accepting, lets every request in flight finish, then exits:
a blue/green swap never cuts a request in half.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["MAX_BODY", "JsonHandler", "Server", "serve_until_stopped"]

log = logging.getLogger(__name__)

MAX_BODY = 1024 * 1024


class Server(ThreadingHTTPServer):
    """Threaded server whose close waits for the requests in flight."""

    daemon_threads = False
    block_on_close = True
    allow_reuse_address = True
    request_queue_size = 128


class BodyError(ValueError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class JsonHandler(BaseHTTPRequestHandler):
    """Request handler with JSON helpers; access logs go to ``logging`` at DEBUG."""

    protocol_version = "HTTP/1.1"
    server_version = "tuneloop-local"
    timeout = 60  # seconds a client may stall mid-request before its connection is dropped

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def send_json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_raw(status, data, headers)

    def send_raw(self, status: int, data: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        # One request per connection: an idle keep-alive client would otherwise hold a
        # handler thread and delay the graceful stop of a blue/green swap.
        self.send_header("Connection", "close")
        self.close_connection = True
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def send_error_json(self, status: int, code: str, message: str) -> None:
        self.send_json(status, {"error": {"code": code, "message": message}})

    def read_body(self) -> bytes:
        """The request body (Content-Length bounded by MAX_BODY); raises BodyError."""
        length_header = self.headers.get("Content-Length")
        if length_header is None:
            raise BodyError(411, "a Content-Length header is required")
        try:
            length = int(length_header)
        except ValueError as exc:
            raise BodyError(400, "Content-Length is not a number") from exc
        if length < 0 or length > MAX_BODY:
            raise BodyError(413, f"the request body must be at most {MAX_BODY} bytes")
        return self.rfile.read(length)

    def read_json(self) -> Any:
        data = self.read_body()
        try:
            return json.loads(data)
        except ValueError as exc:
            raise BodyError(400, f"the request body is not valid JSON: {exc}") from exc


def serve_until_stopped(server: Server) -> None:
    """Serve until SIGTERM/SIGINT, then drain the requests in flight and close."""

    def stop(signum: int, frame: Any) -> None:
        del frame
        log.info("signal %s: draining and stopping", signum)
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
