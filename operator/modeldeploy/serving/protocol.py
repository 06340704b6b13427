"""One client connection: an asyncio Protocol over httptools (the HTTP/1.1 parser uvicorn uses).

Keep-alive, pipelining, chunked bodies and `Expect: 100-continue` come from the parser; what a
client may send is bounded by serving/limits.py: the request line and the headers by size and
count as they arrive (httptools itself buffers a header until it ends, so bytes that arrive
while a request's head is still open are counted too), the body by MAX_CONTENT_LENGTH before it
is buffered, and the time a head or a body may take by the server's sweep (`check_deadlines`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from email.utils import formatdate
from http import HTTPStatus
from typing import TYPE_CHECKING

import httptools

from modeldeploy.serving.limits import Limits

if TYPE_CHECKING:
    from modeldeploy.serving.accept import ConnectionBoard
    from modeldeploy.serving.server import App

log = logging.getLogger(__name__)

# How long a refused upload is drained before its connection closes.
LINGER_SECONDS = 2.0

REASONS = {status.value: status.phrase.encode() for status in HTTPStatus}
TEXT = b"text/plain; charset=utf-8"


class _Refuse(Exception):
    """Raised from a parser callback to stop parsing and answer `status`."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _Date:
    """The Date header, formatted once a second rather than once a request."""

    def __init__(self) -> None:
        self.second = 0
        self.value = b""

    def get(self) -> bytes:
        now = int(time.time())
        if now != self.second:
            self.second = now
            self.value = formatdate(now, usegmt=True).encode()
        return self.value


class ServerState:
    """What every connection of one worker shares: the limits, the set of connections."""

    def __init__(self, limits: Limits, board: ConnectionBoard | None = None) -> None:
        self.limits = limits
        self.connections: set[HttpProtocol] = set()
        self.date = _Date()
        self.stopping = False
        self.board = board
        self.on_closed = lambda: None  # the acceptor's, to resume below the connection cap

    def opened(self, connection: HttpProtocol) -> None:
        self.connections.add(connection)  # the acceptor has counted it

    def closed(self, connection: HttpProtocol) -> None:
        if connection in self.connections:
            self.connections.discard(connection)
            if self.board is not None:
                self.board.add(-1)
            self.on_closed()


class HttpProtocol(asyncio.Protocol):
    """Parse requests, answer each as soon as its body is complete."""

    def __init__(self, app: App, state: ServerState) -> None:
        self.app = app
        self.state = state
        self.limits = state.limits
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.last_active = time.monotonic()
        self.began = self.last_active  # monotonic time the current request's first byte came
        self.in_request = False
        self.in_head = True  # between requests, or inside a request line and its headers
        self.served = False  # answered a request: idle time is keep-alive from then on
        self.head_bytes = 0
        self.completed = 0
        self.half_closed = False
        self.started = time.perf_counter_ns()  # when the current request began
        self._reset()

    def _reset(self) -> None:
        self.url = b""
        self.headers = 0
        self.header_bytes = 0
        self.content_type: bytes | None = None
        self.accept: bytes | None = None
        self.content_length = -1
        self.expect_continue = False
        self.body: list[bytes] = []
        self.body_size = 0
        self.body_began = 0.0  # monotonic time the headers were complete
        self.refused = False  # answered early (413 and the like); ignore the rest

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.state.opened(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.state.closed(self)
        self.transport = None

    def data_received(self, data: bytes) -> None:
        if self.half_closed:  # answered and closing: drain what is still coming, unparsed
            return
        self.last_active = time.monotonic()
        was_in_head, completed = self.in_head, self.completed
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self.completed != completed and self.transport is not None:
                # Answered as plain HTTP (Upgrade ignored); the parser reads no further.
                self.transport.close()
            else:
                self._error_and_close(400, "protocol upgrades are not supported")
            return
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if not isinstance(cause, _Refuse):
                raise
            self._error_and_close(cause.status, cause.message)
            return
        except httptools.HttpParserError as exc:
            self._error_and_close(400, f"malformed HTTP request: {exc}")
            return
        if was_in_head and self.in_head and completed == self.completed:
            # All of `data` was head that httptools holds until its header ends: count it.
            self.head_bytes += len(data)
            if self.head_bytes > self.limits.max_request_line + self.limits.max_header_bytes:
                # (A long URL is caught as it arrives, in on_url: this is a long header.)
                self._error_and_close(431, self._too_large_message(431))

    def pause_writing(self) -> None:
        # The client is not reading its answers: stop reading its requests until it does.
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None:
            self.transport.resume_reading()

    # httptools callbacks

    def on_message_begin(self) -> None:
        self.in_request = True
        self.began = time.monotonic()
        self.started = time.perf_counter_ns()
        self._reset()

    def on_url(self, url: bytes) -> None:
        self.url += url
        if len(self.url) > self.limits.max_request_line:
            raise _Refuse(414, self._too_large_message(414))

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers += 1
        self.header_bytes += len(name) + len(value) + 4
        if (
            self.headers > self.limits.max_headers
            or self.header_bytes > self.limits.max_header_bytes
        ):
            raise _Refuse(431, self._too_large_message(431))
        name = name.lower()
        if name == b"content-type":
            self.content_type = value
        elif name == b"accept":
            self.accept = value
        elif name == b"content-length":
            self.content_length = int(value) if value.isdigit() and len(value) < 20 else -1
        elif name == b"expect":
            self.expect_continue = value.lower() == b"100-continue"

    def on_headers_complete(self) -> None:
        self.in_head = False
        self.body_began = time.monotonic()
        self.head_bytes = 0
        if self.content_length > self.app.max_body:
            self._refuse_too_large(self.content_length)
        elif self.expect_continue and self.transport is not None:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, chunk: bytes) -> None:
        if self.refused:
            return
        self.body_size += len(chunk)
        if self.body_size > self.app.max_body:  # chunked bodies have no length up front
            self._refuse_too_large(self.body_size)
            return
        self.body.append(chunk)

    def on_message_complete(self) -> None:
        self.in_request = False
        self.in_head = True
        self.served = True
        self.completed += 1
        if self.refused or self.transport is None:
            return
        body = self.body[0] if len(self.body) == 1 else b"".join(self.body)
        self.body = []
        path = self.url.split(b"?", 1)[0]
        method = self.parser.get_method()
        try:
            status, content_type, payload = self.app.handle(
                method, path, self.content_type, self.accept, body
            )
        except Exception:
            log.exception("error answering %s %s", method.decode(), path.decode("latin-1"))
            status, content_type, payload = 500, TEXT, b"internal server error\n"
        keep_alive = self.parser.should_keep_alive() and not self.state.stopping
        # Counted before the answer leaves: a client holding it sees it in /metrics.
        self.app.metrics.request(path, status, self.started)
        self._respond(status, content_type, b"" if method == b"HEAD" else payload, keep_alive)

    # answers

    def _respond(
        self,
        status: int,
        content_type: bytes,
        payload: bytes,
        keep_alive: bool,
        linger: bool = False,
    ) -> None:
        transport = self.transport
        if transport is None or transport.is_closing() or self.half_closed:
            return
        connection = b""
        if not keep_alive:
            connection = b"Connection: close\r\n"
        elif self.parser.get_http_version() == "1.0":
            connection = b"Connection: keep-alive\r\n"
        transport.write(
            b"HTTP/1.1 %d %s\r\nDate: %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n%s\r\n%s"
            % (
                status,
                REASONS.get(status, b"Unknown"),
                self.state.date.get(),
                content_type,
                len(payload),
                connection,
                payload,
            )
        )
        if keep_alive:
            return
        if linger and transport.can_write_eof():
            # Closing with unread request bytes makes the kernel send a reset, which can destroy
            # the answer before the client reads it: send FIN, drain the rest, close a bit later.
            self.half_closed = True
            transport.write_eof()
            asyncio.get_running_loop().call_later(LINGER_SECONDS, transport.close)
        else:
            transport.close()

    def _too_large_message(self, status: int) -> str:
        if status == 414:
            return f"request line over {self.limits.max_request_line} bytes"
        return (
            f"request headers over {self.limits.max_headers} fields "
            f"or {self.limits.max_header_bytes} bytes"
        )

    def _refuse_too_large(self, size: int) -> None:
        self.refused = True
        self.body = []
        message = (
            f"request body of {size} bytes is over MAX_CONTENT_LENGTH ({self.app.max_body} bytes)"
        )
        # The rest of the body is not read: answer now and close the connection.
        self.app.metrics.request(self.url.split(b"?", 1)[0], 413, self.started)
        self._respond(413, TEXT, message.encode() + b"\n", keep_alive=False, linger=True)

    def _error_and_close(self, status: int, message: str) -> None:
        self.refused = True
        self.app.metrics.request(b"", status, self.started)  # not a request of any route
        # Unread request bytes may follow (an oversized head): linger so the answer arrives.
        self._respond(status, TEXT, message.encode() + b"\n", keep_alive=False, linger=True)

    # the sweep

    def check_deadlines(self, now: float) -> None:
        """Close the connection if its head, its body or its idleness has lasted too long."""
        if self.transport is None or self.half_closed:
            return
        limits = self.limits
        if self.in_request and self.in_head:
            if now - self.began > limits.header_timeout:
                message = f"request headers not complete within {limits.header_timeout:g} s"
                self._error_and_close(408, message)
        elif self.in_request:
            took = now - self.body_began
            if now - self.last_active > limits.body_timeout:
                message = f"request body stalled: no byte for {limits.body_timeout:g} s"
                self._error_and_close(408, message)
            elif took > limits.body_timeout and self.body_size / took < limits.min_body_rate:
                message = (
                    f"request body too slow: {self.body_size} bytes in {took:.0f} s, under "
                    f"{limits.min_body_rate:g} bytes/s"
                )
                self._error_and_close(408, message)
        else:
            idle = limits.keepalive_timeout if self.served else limits.header_timeout
            if now - self.last_active > idle:
                self.transport.close()

    def close_if_idle(self) -> bool:
        """Close the connection unless a request is arriving; True if closed or gone."""
        if self.transport is None:
            return True
        if self.in_request:
            return False
        self.transport.close()
        return True
