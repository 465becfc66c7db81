"""A fake azure-core HTTP transport: routes requests to canned REST responses and records them.

Every Azure SDK client accepts ``transport=``; with this one the SDK's own serialisation,
polling and error mapping run for real, and tests assert on the requests we sent.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from azure.core.pipeline._tools import is_rest
from azure.core.pipeline.transport import HttpRequest, HttpResponse, HttpTransport
from azure.core.rest._http_response_impl import HttpResponseImpl
from azure.core.utils import case_insensitive_dict

Handler = Callable[["Recorded"], "Reply"]


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # dict/list -> JSON; bytes/str as is
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Recorded:
    method: str
    url: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


class FakeResponse(HttpResponse):
    def __init__(self, request: HttpRequest, reply: Reply) -> None:
        super().__init__(request, None)
        body = reply.body
        if isinstance(body, dict | list):
            data = json.dumps(body).encode()
            content_type = "application/json"
        elif isinstance(body, str):
            data = body.encode()
            content_type = "text/plain"
        else:
            data = body or b""
            content_type = "application/octet-stream"
        self.status_code = reply.status
        self.reason = {200: "OK", 201: "Created", 202: "Accepted", 204: "No Content",
                       404: "Not Found", 409: "Conflict"}.get(reply.status, "Status")
        self.headers = {"Content-Type": content_type, "Content-Length": str(len(data)),
                        **reply.headers}
        self.content_type = self.headers["Content-Type"]
        self._data = data

    def body(self) -> bytes:
        return self._data

    def stream_download(self, pipeline: Any, **kwargs: Any) -> Iterator[bytes]:
        yield self._data


class FakeRestResponse(HttpResponseImpl):
    """The same canned reply for SDK code sending ``azure.core.rest.HttpRequest`` (``.json()``)."""

    def __init__(self, request: Any, reply: Reply) -> None:
        legacy = FakeResponse(request, reply)
        super().__init__(
            request=request,
            internal_response=legacy,
            status_code=legacy.status_code,
            reason=legacy.reason,
            content_type=legacy.content_type,
            headers=case_insensitive_dict(legacy.headers),
            stream_download_generator=legacy.stream_download,
        )
        self._content = legacy.body()
        self._is_closed = True
        self._is_stream_consumed = True


def _respond(request: Any, reply: Reply) -> Any:
    """A legacy or a rest response, matching the kind of request the SDK sent (as transports do)."""
    return FakeRestResponse(request, reply) if is_rest(request) else FakeResponse(request, reply)


class FakeTransport(HttpTransport):
    """Routes ``(METHOD, url regex)`` to replies; unmatched requests answer 404 and are recorded.

    ``latency`` (seconds) is slept per request to simulate a network for benchmarks.
    """

    def __init__(self, *, latency: float = 0.0) -> None:
        self.routes: list[tuple[str, re.Pattern[str], Handler | Reply | list[Reply]]] = []
        self.requests: list[Recorded] = []
        self.latency = latency
        self._lock = threading.Lock()

    def add(self, method: str, pattern: str, reply: Handler | Reply | list[Reply]) -> None:
        """Later routes win. A list of replies is consumed in order (last one repeats)."""
        self.routes.insert(0, (method.upper(), re.compile(pattern), reply))

    def calls(self, method: str | None = None, pattern: str | None = None) -> list[Recorded]:
        rx = re.compile(pattern) if pattern else None
        return [
            r for r in self.requests
            if (method is None or r.method == method.upper()) and (rx is None or rx.search(r.url))
        ]

    def send(self, request: HttpRequest, **kwargs: Any) -> HttpResponse:
        body = request.body if isinstance(request.body, bytes) else (
            request.body.encode() if isinstance(request.body, str) else b""
        )
        if not body and getattr(request, "data", None):
            body = request.data if isinstance(request.data, bytes) else str(request.data).encode()
        rec = Recorded(request.method.upper(), request.url, dict(request.headers), body or b"")
        with self._lock:
            self.requests.append(rec)
        if self.latency:
            time.sleep(self.latency)
        for method, rx, reply in self.routes:
            if method == rec.method and rx.search(rec.url):
                if callable(reply):
                    return _respond(request, reply(rec))
                if isinstance(reply, list):
                    with self._lock:
                        current = reply.pop(0) if len(reply) > 1 else reply[0]
                    return _respond(request, current)
                return _respond(request, reply)
        return _respond(
            request,
            Reply(404, {"error": {"code": "NotFound", "message": f"no route for {rec.url}"}}),
        )

    def open(self) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> FakeTransport:
        return self

    def __exit__(self, *args: Any) -> None:
        pass
